//! The database server on the hosts, configured as multiaz asks: the recommended
//! settings file (`sidecar/examples/mariadb.cnf` or `mysql.cnf`, README "On EC2",
//! enforced by `multiaz check`) written to each host, then this server's id and role.
//! Which server a host runs is its image's ([`Server`]); every function here takes the
//! host and speaks that server's dialect.

use crate::{Cluster, Host};
use anyhow::Context;
use multiaz_engine::Flavour;
use multiaz_sidecar::adapters::mysql::dialect::{Dialect, SourceSpec};
use multiaz_testkit::server::ServerOptions;
use std::time::{Duration, Instant};

pub const DATADIR: &str = "/var/lib/mysql";
pub const SOCKET: &str = "/run/mysqld/mysqld.sock";
pub const PORT: u16 = 3306;
/// The sidecar's user (all privileges) and the replication user.
pub const ADMIN_USER: &str = "multiaz";
/// The application's user: no SUPER, so `read_only` fences it.
pub const APP_USER: &str = "app";

/// Where each host keeps the recommended settings file.
pub const CNF: &str = "/etc/mysql/multiaz.cnf";

/// A database server and version, as a host image carries it (`ci/host-image`
/// builds `multiaz-host:<name>` for each).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Server {
    /// Debian bookworm's MariaDB 10.11 LTS.
    Mariadb1011,
    /// Debian sid's MariaDB 11.8 LTS.
    Mariadb118,
    /// Debian sid's MySQL 9.7 LTS.
    Mysql97,
}

impl Server {
    pub const ALL: [Server; 3] = [Server::Mariadb1011, Server::Mariadb118, Server::Mysql97];

    pub fn name(self) -> &'static str {
        match self {
            Server::Mariadb1011 => "mariadb-10.11",
            Server::Mariadb118 => "mariadb-11.8",
            Server::Mysql97 => "mysql-9.7",
        }
    }

    pub fn parse(name: &str) -> Option<Server> {
        Server::ALL.into_iter().find(|s| s.name() == name)
    }

    /// The image `ci/host-image` builds for it.
    pub fn image(self) -> String {
        format!("multiaz-host:{}", self.name())
    }

    /// The sidecar's `cluster.flavour` for it.
    pub fn flavour(self) -> Flavour {
        match self {
            Server::Mariadb1011 | Server::Mariadb118 => Flavour::Mariadb,
            Server::Mysql97 => Flavour::Mysql,
        }
    }

    /// Its statements, as the sidecar spells them.
    pub fn dialect(self) -> Dialect {
        Dialect(self.flavour())
    }

    pub fn is_mysql(self) -> bool {
        self.flavour() == Flavour::Mysql
    }

    /// The server's program (what a SIGKILL is sent to).
    pub fn daemon(self) -> &'static str {
        match self.is_mysql() {
            true => "mysqld",
            false => "mariadbd",
        }
    }

    /// The command-line client.
    pub fn client(self) -> &'static str {
        match self.is_mysql() {
            true => "mysql",
            false => "mariadb",
        }
    }

    /// The recommended settings file.
    pub fn cnf(self) -> &'static str {
        match self.is_mysql() {
            true => multiaz_sidecar::MYSQL_CNF,
            false => multiaz_sidecar::MARIADB_CNF,
        }
    }

    /// The server's command line. `id` is the server_id; `master` starts it writable
    /// with semi-sync source on (only the first start of the first master); otherwise
    /// it starts as the settings file says (read_only, semi-sync replica side).
    pub fn command(self, id: u32, master: bool) -> String {
        let flavour = match self.is_mysql() {
            true => Flavour::Mysql,
            false => Flavour::Mariadb,
        };
        let mut server = ServerOptions::new(flavour, CNF, DATADIR, SOCKET);
        server.port = PORT;
        server.bind_address = "0.0.0.0".into();
        server.buffer_pool = "32M".into();
        server.server_id = id;
        server.master = master;
        if self.is_mysql() {
            server.secure_file_priv = Some("/var/lib/mysql-files".into());
        }
        format!("{} {}", self.daemon(), server.args().join(" "))
    }

    /// Creates the data directory (as the package's install would).
    fn install(self) -> String {
        match self.is_mysql() {
            true => format!(
                "mkdir -p /var/lib/mysql-files && mysqld --no-defaults --initialize-insecure \
                 --user=root --datadir={DATADIR} > /tmp/initialize.log 2>&1 \
                 || {{ tail -5 /tmp/initialize.log >&2; exit 1; }}"
            ),
            false => format!(
                "mariadb-install-db --no-defaults --user=root --datadir={DATADIR} \
                 --auth-root-authentication-method=normal --skip-test-db > /dev/null"
            ),
        }
    }
}

/// SQL as root over the socket; rows tab-separated, without column names, values raw
/// (a newline in a value, as in a MySQL executed set of several servers, comes as one).
pub async fn sql(host: &Host, statements: &str) -> anyhow::Result<String> {
    let quoted = statements.replace('\'', r"'\''");
    host.sh(&format!(
        "{} --no-defaults -uroot --socket={SOCKET} -N -r -e '{quoted}'",
        host.server.client()
    ))
    .await
}

/// SQL as root over the socket, read from standard input: for statements that carry
/// a secret, which then appears on no command line.
pub async fn sql_stdin(host: &Host, script: &str) -> anyhow::Result<String> {
    host.sh(&format!(
        "{script} | {} --no-defaults -uroot --socket={SOCKET} -N",
        host.server.client()
    ))
    .await
}

/// Starts the server (data directory created on first start) and waits until it
/// answers.
pub async fn start(host: &Host, id: u32, master: bool) -> anyhow::Result<()> {
    start_with(host, id, master, "").await
}

/// [`start`] with more server options (e.g. `--skip-networking`: only the local socket,
/// no sidecar or replica gets in).
pub async fn start_with(host: &Host, id: u32, master: bool, extra: &str) -> anyhow::Result<()> {
    let server = host.server;
    let cnf = server.cnf().replace('\'', r"'\''");
    host.sh(&format!(
        "mkdir -p /run/mysqld /etc/mysql && printf '%s' '{cnf}' > {CNF} && \
         if [ ! -d {DATADIR}/mysql ]; then {}; fi",
        server.install()
    ))
    .await?;
    host.spawn(
        &format!("{} {extra}", server.command(id, master)),
        "mysqld.log",
    )
    .await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if sql(host, "SELECT 1").await.is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            let log = host
                .sh("tail -20 /work/mysqld.log")
                .await
                .unwrap_or_default();
            anyhow::bail!(
                "{}: {} did not answer within 60 s:\n{log}",
                host.name,
                server.daemon()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// SIGKILL of the server: the host and everything else on it live on.
pub async fn kill(host: &Host) -> anyhow::Result<()> {
    let d = host.server.daemon();
    host.sh(&format!(
        "pkill -9 -x {d}; while pgrep -x {d} > /dev/null; do sleep 0.05; done"
    ))
    .await
    .map(|_| ())
}

/// The sidecar's user (all privileges; replicas log in with it too) and the
/// application's (rows in `app` only), on this server alone (not binlogged). MySQL's
/// super_read_only stops even root from creating users: it is lifted for the while
/// and put back as it was.
pub async fn create_users(
    host: &Host,
    admin_password: &str,
    app_password: &str,
) -> anyhow::Result<()> {
    let users = format!(
        "SET sql_log_bin = 0; \
         CREATE USER '{ADMIN_USER}'@'%' IDENTIFIED BY '{admin_password}'; \
         GRANT ALL ON *.* TO '{ADMIN_USER}'@'%' WITH GRANT OPTION; \
         CREATE USER '{APP_USER}'@'%' IDENTIFIED BY '{app_password}'; \
         GRANT SELECT, INSERT, UPDATE, DELETE ON app.* TO '{APP_USER}'@'%';"
    );
    let script = match host.server.is_mysql() {
        true => format!(
            "SET @sro = @@global.super_read_only; SET GLOBAL super_read_only = OFF; {users} \
             SET GLOBAL super_read_only = @sro;"
        ),
        false => users,
    };
    sql(host, &script).await.map(|_| ())
}

/// What `SHOW REPLICA STATUS` says of a replica, in either dialect's column names.
#[derive(Debug, Clone, Default)]
pub struct ReplicaStatus {
    pub source_host: String,
    pub io_running: String,
    pub sql_running: String,
    pub seconds_behind: Option<u64>,
    pub last_io_error: String,
    pub last_sql_error: String,
}

/// The replica's status; `None` when it replicates from nothing.
pub async fn replica_status(host: &Host) -> anyhow::Result<Option<ReplicaStatus>> {
    let dialect = host.server.dialect();
    let out = host
        .sh(&format!(
            // Vertical output (`-E`): MySQL 9's client refuses `\G` in `-e`.
            "{} --no-defaults -uroot --socket={SOCKET} -E -e '{}'",
            host.server.client(),
            dialect.replica_status()
        ))
        .await?;
    if out.trim().is_empty() {
        return Ok(None);
    }
    let field = |name: &str| {
        out.lines()
            .find_map(|l| l.trim().strip_prefix(&format!("{name}: ")))
            .unwrap_or("")
            .to_string()
    };
    let cols = dialect.columns();
    Ok(Some(ReplicaStatus {
        source_host: field(cols.host),
        io_running: field(cols.io_running),
        sql_running: field(cols.sql_running),
        seconds_behind: field(cols.seconds_behind).parse().ok(),
        last_io_error: field(cols.last_io_error),
        last_sql_error: field("Last_SQL_Error"),
    }))
}

/// Three fresh hosts of `server` with their files under `work` (emptied first),
/// replicating as [`replicated`] sets them up: what a test on one server starts from.
pub async fn replicated_cluster(
    server: Server,
    work: &std::path::Path,
    admin_password: &str,
    app_password: &str,
    schema: &str,
) -> anyhow::Result<Cluster> {
    let _ = std::fs::remove_dir_all(work);
    let cluster = Cluster::start(&crate::Options::with_server(server, work)).await?;
    replicated(&cluster, admin_password, app_password, schema).await?;
    Ok(cluster)
}

/// Waits (30 s at most) until `want` semi-sync replicas are attached to `master`.
pub async fn semi_sync_attached(master: &Host, want: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // Rpl_semi_sync_master_clients (MariaDB) or Rpl_semi_sync_source_clients.
        let n = sql(master, "SHOW GLOBAL STATUS LIKE 'Rpl_semi_sync_%_clients'").await?;
        let n = n
            .split_whitespace()
            .nth(1)
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(0);
        if n >= want {
            return Ok(());
        }
        if Instant::now() > deadline {
            anyhow::bail!(
                "{}: {want} semi-sync replicas did not attach within 30 s ({n} did)",
                master.name
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every host runs its server; `db-1` is the master, the others replicate from it
/// with GTID and semi-sync. `admin_password` is the sidecar's (and replication's),
/// `app_password` the application's; `schema` runs on the master first.
pub async fn replicated(
    cluster: &Cluster,
    admin_password: &str,
    app_password: &str,
    schema: &str,
) -> anyhow::Result<()> {
    for (i, h) in cluster.hosts.iter().enumerate() {
        start(h, i as u32 + 1, i == 0).await?;
        create_users(h, admin_password, app_password).await?;
    }
    let master = &cluster.hosts[0];
    let source_host = master.ip.to_string();
    let source = SourceSpec {
        host: &source_host,
        port: PORT,
        user: ADMIN_USER,
        password: admin_password.as_bytes(),
        tls: None,
    };
    for h in &cluster.hosts[1..] {
        let dialect = h.server.dialect();
        let mut statements = dialect.point_at(&source);
        statements.push(dialect.start_replication().into());
        sql(h, &statements.join("; "))
            .await
            .with_context(|| format!("{} replicating from {}", h.name, master.name))?;
    }
    // Semi-sync never gives up waiting (a day, in the settings file): the first write
    // waits until the replicas are attached and acknowledging.
    semi_sync_attached(master, cluster.hosts.len() - 1).await?;
    sql(master, &format!("CREATE DATABASE app; {schema}")).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::Server;

    #[test]
    fn every_server_is_named_once_and_parsed_back() {
        for s in Server::ALL {
            assert_eq!(Server::parse(s.name()), Some(s));
            assert!(s.image().ends_with(s.name()));
        }
        assert_eq!(Server::parse("mysql-8.0"), None);
        assert!(Server::Mysql97
            .command(2, false)
            .contains("--super-read-only=ON"));
        assert!(!Server::Mariadb118.command(2, false).contains("super"));
    }
}
