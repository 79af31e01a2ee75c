//! MariaDB on the hosts, configured as multiaz asks: the recommended settings file
//! (`sidecar/examples/mariadb.cnf`, README "On EC2" step 5, enforced by `multiaz
//! check`) written to each host, then this server's id and role.

use crate::{Cluster, Host};
use anyhow::Context;
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

/// The server's command line. `id` is the server_id; `master` starts it writable with
/// semi-sync source on (only the first start of the first master); otherwise it starts
/// as the settings file says (read_only, semi-sync replica side).
pub fn mariadbd(id: u32, master: bool) -> String {
    let on = |b: bool| if b { "ON" } else { "OFF" };
    format!(
        "mariadbd --defaults-file={CNF} --user=root --datadir={DATADIR} --socket={SOCKET} \
         --port={PORT} --bind-address=0.0.0.0 --skip-name-resolve --innodb-buffer-pool-size=32M \
         --server-id={id} --read-only={} --rpl-semi-sync-master-enabled={} \
         --rpl-semi-sync-slave-enabled={}",
        on(!master),
        on(master),
        on(!master)
    )
}

/// SQL as root over the socket.
pub async fn sql(host: &Host, statements: &str) -> anyhow::Result<String> {
    let quoted = statements.replace('\'', r"'\''");
    host.sh(&format!(
        "mariadb --no-defaults -uroot --socket={SOCKET} -N -e '{quoted}'"
    ))
    .await
}

/// Starts mariadbd (data directory created on first start) and waits until it answers.
pub async fn start(host: &Host, id: u32, master: bool) -> anyhow::Result<()> {
    start_with(host, id, master, "").await
}

/// [`start`] with more server options (e.g. `--skip-networking`: only the local socket,
/// no sidecar or replica gets in).
pub async fn start_with(host: &Host, id: u32, master: bool, extra: &str) -> anyhow::Result<()> {
    let cnf = multiaz_sidecar::MARIADB_CNF.replace('\'', r"'\''");
    host.sh(&format!(
        "mkdir -p /run/mysqld /etc/mysql && printf '%s' '{cnf}' > {CNF} && \
         if [ ! -d {DATADIR}/mysql ]; then \
         mariadb-install-db --no-defaults --user=root --datadir={DATADIR} \
         --auth-root-authentication-method=normal --skip-test-db > /dev/null; fi"
    ))
    .await?;
    host.spawn(&format!("{} {extra}", mariadbd(id, master)), "mysqld.log")
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
            anyhow::bail!("{}: mariadbd did not answer within 60 s:\n{log}", host.name);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// SIGKILL of mariadbd: the host and everything else on it live on.
pub async fn kill(host: &Host) -> anyhow::Result<()> {
    host.sh("pkill -9 -x mariadbd; while pgrep -x mariadbd > /dev/null; do sleep 0.05; done")
        .await
        .map(|_| ())
}

/// The sidecar's user (all privileges; replicas log in with it too) and the
/// application's (rows in `app` only), on this server alone (not binlogged).
pub async fn create_users(
    host: &Host,
    admin_password: &str,
    app_password: &str,
) -> anyhow::Result<()> {
    sql(
        host,
        &format!(
            "SET sql_log_bin = 0; \
             CREATE USER '{ADMIN_USER}'@'%' IDENTIFIED BY '{admin_password}'; \
             GRANT ALL ON *.* TO '{ADMIN_USER}'@'%' WITH GRANT OPTION; \
             CREATE USER '{APP_USER}'@'%' IDENTIFIED BY '{app_password}'; \
             GRANT SELECT, INSERT, UPDATE, DELETE ON app.* TO '{APP_USER}'@'%';"
        ),
    )
    .await
    .map(|_| ())
}

/// Every host runs MariaDB; `db-1` is the master, the others replicate from it with
/// GTID and semi-sync. `admin_password` is the sidecar's (and replication's),
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
    for h in &cluster.hosts[1..] {
        sql(
            h,
            &format!(
                "CHANGE MASTER TO MASTER_HOST = '{}', MASTER_PORT = {PORT}, \
                 MASTER_USER = '{ADMIN_USER}', MASTER_PASSWORD = '{admin_password}', \
                 MASTER_USE_GTID = slave_pos, MASTER_HEARTBEAT_PERIOD = 1, \
                 MASTER_CONNECT_RETRY = 1; START SLAVE;",
                master.ip
            ),
        )
        .await
        .with_context(|| format!("{} replicating from {}", h.name, master.name))?;
    }
    // Semi-sync never gives up waiting (a day, in the settings file): the first write waits
    // until the replicas are attached and acknowledging.
    let want = cluster.hosts.len() - 1;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n = sql(
            master,
            "SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS \
             WHERE VARIABLE_NAME = 'RPL_SEMI_SYNC_MASTER_CLIENTS'",
        )
        .await?;
        if n.trim().parse::<usize>().unwrap_or(0) >= want {
            break;
        }
        if Instant::now() > deadline {
            anyhow::bail!(
                "{}: {want} semi-sync replicas did not attach within 30 s ({} did)",
                master.name,
                n.trim()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    sql(master, &format!("CREATE DATABASE app; {schema}")).await?;
    Ok(())
}
