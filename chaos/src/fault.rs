//! Injecting a fault on the master's host, and healing it afterwards.

use crate::api_proxy::Mode;
use crate::cli::Fault;
use crate::setup::{accept_vip, World};
use anyhow::Context;
use multiaz_testcontainers::{db, Host, BIN_DIR};
use std::collections::BTreeMap;
use std::net::IpAddr;

impl Fault {
    /// The EC2 API's behaviour from the fault on (until [`Fault::api_after`] says otherwise).
    pub fn api_mode(self, share: f64) -> Mode {
        match self {
            Fault::ApiThrottle => Mode::Throttle(share),
            Fault::ApiOutage | Fault::ApiOutagePartition => Mode::Outage,
            _ => Mode::Pass,
        }
    }

    /// What happens to the master's host; the API faults kill its mysqld.
    fn on_host(self) -> HostFault {
        match self {
            Fault::MysqldKill | Fault::ApiThrottle | Fault::ApiOutage => HostFault::MysqldKill,
            Fault::HostKill => HostFault::HostKill,
            Fault::AzPartition | Fault::ApiOutagePartition => HostFault::Partition,
            Fault::MasterAhead => HostFault::Ahead,
            Fault::Switchover => HostFault::Switchover,
        }
    }
}

enum HostFault {
    MysqldKill,
    HostKill,
    Partition,
    /// The master runs ahead of every replica, then its mysqld is killed.
    Ahead,
    /// `multiaz switchover` run on the master's host; nothing to heal.
    Switchover,
}

/// What [`Fault::MasterAhead`] wrote on the master alone before it was killed.
#[derive(Debug, Clone)]
pub struct Ahead {
    /// Transactions in the batch (the clients' writes acknowledged meanwhile come on
    /// top: they too reached the master alone).
    pub transactions: usize,
    /// The table the batch created and filled.
    pub table: String,
    /// The rows it holds at the end of the batch.
    pub rows: usize,
}

/// The hosts of AZ `m` (its database host and its client), and every other host.
fn sides(world: &World, m: usize) -> (Vec<&Host>, Vec<&Host>) {
    let c = &world.cluster;
    let inside = vec![&c.hosts[m], &c.clients[m]];
    let outside = c
        .hosts
        .iter()
        .chain(&c.clients)
        .filter(|h| !inside.iter().any(|i| i.name == h.name))
        .collect();
    (inside, outside)
}

/// Drops every packet between the two sides, both ways: each host drops what it would
/// send to the other side (a blackhole route per address), so nothing crosses in
/// either direction, not even through the router.
async fn cut(from: &[&Host], to: &[&Host], heal: bool) -> anyhow::Result<()> {
    for h in from {
        let ips: Vec<IpAddr> = to.iter().map(|t| t.ip).collect();
        let script: String = ips
            .iter()
            .map(|ip| match heal {
                false => format!("ip route replace blackhole {ip}/32;"),
                true => format!("ip route del blackhole {ip}/32 2>/dev/null;"),
            })
            .collect();
        h.sh(&format!("{script} true")).await?;
    }
    Ok(())
}

/// Injects the fault on the master `m`; for [`Fault::MasterAhead`], what the master
/// wrote alone.
pub async fn inject(
    world: &World,
    fault: Fault,
    m: usize,
    cycle: u32,
) -> anyhow::Result<Option<Ahead>> {
    let host = world.db(m);
    match fault.on_host() {
        HostFault::MysqldKill => db::kill(host).await?,
        HostFault::HostKill => host.crash().await?,
        HostFault::Partition => {
            let (inside, outside) = sides(world, m);
            cut(&inside, &outside, false).await?;
            cut(&outside, &inside, false).await?
        }
        HostFault::Ahead => return run_ahead(world, m, cycle).await.map(Some),
        // In the background, as an operator's terminal would: the fault's instant is
        // when it was asked for, and the run watches the outcome as for a failover.
        HostFault::Switchover => {
            let to = world.db((m + 1) % world.cluster.hosts.len()).name.clone();
            host.spawn(
                &format!("{BIN_DIR}/multiaz switchover --to {to} --config /work/multiaz.toml"),
                "switchover.log",
            )
            .await?
        }
    }
    Ok(None)
}

/// How many single-row transactions the master-ahead batch holds besides its two DDLs,
/// its 2 MB transaction and (MySQL) its tagged and compressed ones.
const AHEAD_ROWS: usize = 100;

/// The batch the master writes alone: its statements and how many transactions.
fn ahead_batch(table: &str, mysql: bool) -> (String, usize) {
    let mut sql = format!("CREATE TABLE {table} (id INT PRIMARY KEY, v LONGBLOB) ENGINE=InnoDB;\n");
    for id in 1..=AHEAD_ROWS {
        sql.push_str(&format!("INSERT INTO {table} VALUES ({id}, 'ahead');\n"));
    }
    let big = AHEAD_ROWS + 1;
    sql.push_str(&format!(
        "INSERT INTO {table} VALUES ({big}, REPEAT('x', 2 * 1024 * 1024));\n"
    ));
    // A DDL that parses only under the session's sql_mode: salvage must replay the
    // statement's session (ANSI_QUOTES here) or the apply fails and the run with it.
    let (schema, name) = table.split_once('.').unwrap_or(("app", table));
    sql.push_str(&format!(
        "SET SESSION sql_mode = CONCAT(@@sql_mode, ',ANSI_QUOTES');\n\
         CREATE TABLE \"{schema}\".\"{name}_quoted\" (id INT PRIMARY KEY);\n\
         SET SESSION sql_mode = DEFAULT;\n"
    ));
    let mut n = AHEAD_ROWS + 3;
    if mysql {
        // A tagged GTID (uuid:chaos:n) and a transaction the binlog holds compressed.
        sql.push_str(&format!(
            "SET gtid_next = 'AUTOMATIC:chaos';\nINSERT INTO {table} VALUES ({}, 'tagged');\n\
             SET gtid_next = 'AUTOMATIC';\n\
             SET SESSION binlog_transaction_compression = ON;\n\
             INSERT INTO {table} VALUES ({}, REPEAT('compressed ', 1000));\n\
             SET SESSION binlog_transaction_compression = OFF;\n",
            big + 1,
            big + 2
        ));
        n += 2;
    }
    (sql, n)
}

/// [`Fault::MasterAhead`]: semi-sync off on the master, the replicas' IO threads
/// stopped, the batch committed on the master alone, and its mysqld killed — in one
/// script on the master's host, so that the sidecars (which restart a stopped IO
/// thread within a probe or two) have no time to re-attach a replica in between. When
/// one was re-attached all the same, the script says so before the kill and it is
/// tried again with a new batch.
async fn run_ahead(world: &World, m: usize, cycle: u32) -> anyhow::Result<Ahead> {
    let host = world.db(m);
    let server = host.server;
    let dialect = server.dialect();
    let semi_sync_off = match server.is_mysql() {
        true => "SET GLOBAL rpl_semi_sync_source_enabled = OFF",
        false => "SET GLOBAL rpl_semi_sync_master_enabled = OFF",
    };
    let (stop_io, status) = (dialect.stop_io_thread(), dialect.replica_status());
    let io_column = dialect.columns().io_running;
    let client = server.client();
    let replicas: Vec<String> = (0..world.cluster.hosts.len())
        .filter(|&i| i != m)
        .map(|i| world.ip(i).to_string())
        .collect();
    for attempt in 1..=5 {
        let table = format!("app.ahead_c{cycle}_a{attempt}");
        let (batch, transactions) = ahead_batch(&table, server.is_mysql());
        std::fs::write(host.work.join("ahead.sql"), &batch)?;
        // The replicas are reached as the sidecar's user, its password from the
        // host's secret file through the environment (never on a command line).
        // The password goes only to the remote calls: root logs in over the socket
        // without one, and MYSQL_PWD would make that login fail.
        let mut script = format!(
            "remote() {{ MYSQL_PWD=$(cat {secrets}/mysql-password) \
               {client} --no-defaults -u {u} -h \"$1\" -E -e \"$2\"; }}; \
             {client} --no-defaults -uroot --socket={socket} -e '{semi_sync_off}' && ",
            secrets = crate::setup::SECRETS,
            u = db::ADMIN_USER,
            socket = db::SOCKET,
        );
        for r in &replicas {
            script.push_str(&format!("remote {r} '{stop_io}' && "));
        }
        script.push_str(&format!(
            "{client} --no-defaults -uroot --socket={} < /work/ahead.sql && ",
            db::SOCKET
        ));
        for r in &replicas {
            script.push_str(&format!(
                "{{ s=$(remote {r} '{status}'); echo \"$s\" | grep -q '{io_column}: No' \
                 || {{ echo \"{r}: $(echo \"$s\" | grep -m1 '{io_column}')\"; exit 0; }}; }} && "
            ));
        }
        // A step that failed ends the script with what it said (never a kill).
        script.push_str(&format!(
            "{{ pkill -9 -x {d}; while pgrep -x {d} > /dev/null; do sleep 0.05; done; echo killed; }} \
             || {{ echo failed; exit 1; }}",
            d = server.daemon()
        ));
        let out = host.sh(&script).await?;
        match out.trim() {
            "killed" => {
                return Ok(Ahead {
                    // Every transaction but the two CREATE TABLEs inserts one row.
                    rows: transactions - 2,
                    transactions,
                    table,
                });
            }
            said => crate::progress(&format!(
                "  a replica was re-attached during batch {attempt} ({said}): again"
            )),
        }
    }
    anyhow::bail!(
        "{}: the replicas kept being re-attached while the master ran ahead",
        host.name
    )
}

/// After [`Fault::MasterAhead`]'s failover to `n`: the salvage recovered the whole
/// batch and nothing went unrecovered, and the dead master's binlog holds no
/// transaction the new master lacks (read on the old master's host, by `multiaz
/// binlog tail`, its mysqld still down).
pub async fn check_ahead(
    world: &World,
    ahead: &Ahead,
    m: usize,
    n: usize,
    outcome: &serde_json::Value,
) -> anyhow::Result<()> {
    let salvage = &outcome["Completed"]["salvage"]["Ok"];
    let recovered = salvage["recovered"].as_u64().unwrap_or(0);
    let missed = salvage["not_recovered"].as_array().map(Vec::len);
    if recovered < ahead.transactions as u64 || missed != Some(0) {
        anyhow::bail!(
            "the master ran {} transactions ahead; the salvage recovered {recovered}, not \
             recovered {missed:?}: {}",
            ahead.transactions,
            outcome["Completed"]["salvage"]
        );
    }
    let new = world.db(n);
    let rows = db::sql(new, &format!("SELECT COUNT(*) FROM {}", ahead.table)).await?;
    if rows.trim() != ahead.rows.to_string() {
        anyhow::bail!(
            "{} holds {} rows of {} on {} after the salvage",
            ahead.table,
            rows.trim(),
            ahead.rows,
            new.name
        );
    }
    let dialect = new.server.dialect();
    let executed = dialect
        .gtids(&db::sql(new, dialect.has_transactions()).await?)
        .map_err(anyhow::Error::msg)?;
    let left = world
        .db(m)
        .sh(&format!(
            "{BIN_DIR}/multiaz binlog tail --json --after '{executed}' --dir {}",
            db::DATADIR
        ))
        .await
        .context("multiaz binlog tail on the dead master's binlog")?;
    if !left.trim().is_empty() {
        anyhow::bail!(
            "transactions in the dead master's binlog are missing on {}: {}",
            new.name,
            left.lines().take(5).collect::<Vec<_>>().join("\n")
        );
    }
    crate::progress(&format!(
        "  salvage: the batch of {} and the clients' writes, {recovered} transactions, all on {}; nothing in the dead master's binlog is missing there",
        ahead.transactions, new.name
    ));
    Ok(())
}

pub async fn heal(world: &World, fault: Fault, m: usize) -> anyhow::Result<()> {
    let host = world.db(m);
    let id = World::node_id(m) as u32;
    match fault.on_host() {
        HostFault::MysqldKill | HostFault::Ahead => db::start(host, id, false).await,
        HostFault::Switchover => Ok(()),
        HostFault::HostKill => {
            host.boot().await?;
            accept_vip(host).await?;
            db::start(host, id, false).await?;
            world.start_sidecar(m).await
        }
        HostFault::Partition => {
            let (inside, outside) = sides(world, m);
            cut(&inside, &outside, true).await?;
            cut(&outside, &inside, true).await
        }
    }
}

/// The master's `gtid_binlog_state` as it was at the dump's position `pos`: per
/// domain, what the master wrote after `pos` is dropped and `pos` itself is the last.
/// The rebuilt server thus knows every server's last transaction up to the dump, as
/// its source did — without it, a rebuilt server later promoted would see the older
/// masters' transactions on its replicas as errant. Whatever came after `pos` it
/// learns by replication.
fn state_at(state: &str, pos: &str) -> String {
    let parse = |s: &str| -> Vec<(u64, u64, u64)> {
        s.split(',')
            .filter_map(|g| {
                let mut p = g.trim().split('-').map(|x| x.parse::<u64>().ok());
                Some((p.next()??, p.next()??, p.next()??))
            })
            .collect()
    };
    let last: BTreeMap<u64, (u64, u64)> = parse(pos)
        .into_iter()
        .map(|(d, s, q)| (d, (s, q)))
        .collect();
    let mut out: BTreeMap<(u64, u64), u64> = BTreeMap::new();
    for (d, s, q) in parse(state) {
        if last.get(&d).is_some_and(|&(_, upto)| q <= upto) {
            out.insert((d, s), q);
        }
    }
    for (d, (s, q)) in last {
        out.insert((d, s), q);
    }
    // The domain's last GTID goes last: MariaDB takes the last listed as the newest.
    let mut entries: Vec<((u64, u64), u64)> = out.into_iter().collect();
    entries.sort_by_key(|((d, _), q)| (*d, *q));
    entries
        .iter()
        .map(|((d, s), q)| format!("{d}-{s}-{q}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Rebuilds database host `m` from the master `n`, as the README tells an operator to
/// do with a server that holds errant transactions; restarted normally, its sidecar
/// finds nothing errant and rejoins it.
pub async fn rebuild(world: &World, m: usize, n: usize) -> anyhow::Result<()> {
    match world.db(m).server.is_mysql() {
        true => rebuild_by_clone(world, m, n).await,
        false => rebuild_by_dump(world, m, n).await,
    }
}

/// MySQL: the clone plugin copies the master's data directory, GTID state included,
/// over the master's own port. The server is started without networking while this
/// happens (the clone's connection goes out), so that its sidecar does not repoint it
/// half-copied. Not run by a supervisor, mysqld stops after the clone instead of
/// restarting (error 3707), and is started again here.
async fn rebuild_by_clone(world: &World, m: usize, n: usize) -> anyhow::Result<()> {
    let host = world.db(m);
    let id = World::node_id(m) as u32;
    let donor = format!("{}:{}", world.ip(n), db::PORT);
    db::kill(host).await?;
    db::start_with(host, id, false, "--skip-networking").await?;
    // The password is read from the host's secret file into the statement on stdin:
    // it appears on no command line. CLONE writes the data directory, which
    // super_read_only refuses (ERROR 1290); without networking no client can write
    // meanwhile, and the restart after the clone starts it read-only again.
    let clone = db::sql_stdin(
        host,
        &format!(
            "printf \"SET GLOBAL super_read_only = OFF; \
             SET GLOBAL clone_valid_donor_list = '{donor}'; \
             CLONE INSTANCE FROM '{u}'@'{ip}':{port} IDENTIFIED BY '%s';\" \
             \"$(cat {secrets}/mysql-password)\"",
            u = db::ADMIN_USER,
            ip = world.ip(n),
            port = db::PORT,
            secrets = crate::setup::SECRETS,
        ),
    )
    .await;
    match clone {
        Ok(_) => {}
        // 3707: the clone is done and mysqld stops, for want of a supervisor to
        // restart it.
        Err(e) if format!("{e:#}").contains("3707") => {}
        Err(e) => return Err(e.context(format!("{}: cloning from {donor}", host.name))),
    }
    db::kill(host).await?;
    db::start(host, id, false).await
}

/// MariaDB: a fresh data directory, the master's data from a consistent dump (not
/// binlogged here), and replication position set to where the dump was taken. The
/// server is started without networking while this happens, so that its sidecar does
/// not repoint it half-loaded.
async fn rebuild_by_dump(world: &World, m: usize, n: usize) -> anyhow::Result<()> {
    let host = world.db(m);
    let id = World::node_id(m) as u32;
    let master_ip = world.ip(n);
    db::kill(host).await?;
    host.sh(&format!("rm -rf {}", db::DATADIR)).await?;
    db::start_with(host, id, false, "--skip-networking").await?;
    let s = &world.secrets;
    db::create_users(host, &s.admin_password, &s.app_password).await?;
    // One exec: the dump (its GTID position on the first line of output), then the
    // master's binlog state, read after it. The password comes from the host's secret
    // file, never on a command line here.
    let out = host
        .sh(&format!(
            "export MYSQL_PWD=$(cat {secrets}/mysql-password); \
             mariadb-dump --no-defaults -h {master_ip} -u {u} --single-transaction --gtid \
             --master-data=2 --databases app > /tmp/app.sql && \
             grep -o \"gtid_slave_pos='[^']*'\" /tmp/app.sql | head -1 | cut -d\"'\" -f2 && \
             mariadb --no-defaults -h {master_ip} -u {u} -N -e 'SELECT @@gtid_binlog_state'",
            secrets = crate::setup::SECRETS,
            u = db::ADMIN_USER,
        ))
        .await?;
    let mut lines = out.lines().map(str::trim);
    let (pos, state) = match (lines.next(), lines.next()) {
        (Some(pos), Some(state)) if !pos.is_empty() => (pos.to_string(), state_at(state, pos)),
        _ => anyhow::bail!(
            "{}: the dump from {master_ip} names no GTID position",
            host.name
        ),
    };
    host.sh(&format!(
        "(echo 'SET sql_log_bin = 0;'; cat /tmp/app.sql) | mariadb --no-defaults -uroot --socket={}",
        db::SOCKET
    ))
    .await?;
    db::sql(
        host,
        &format!(
            "RESET MASTER; SET GLOBAL gtid_binlog_state = '{state}'; \
             SET GLOBAL gtid_slave_pos = '{pos}';"
        ),
    )
    .await?;
    db::kill(host).await?;
    db::start(host, id, false).await
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_state_at_a_dump_keeps_older_servers_and_ends_at_its_position() {
        // Server 1 was master up to 47; server 2 since, at 900 now, 880 at the dump.
        assert_eq!(
            super::state_at("0-1-47,0-2-900", "0-2-880"),
            "0-1-47,0-2-880"
        );
        // Salvaged transactions of server 3 after the dump are dropped too.
        assert_eq!(super::state_at("0-3-60,0-1-70", "0-1-50"), "0-1-50");
        assert_eq!(super::state_at("", "0-2-5"), "0-2-5");
    }
}
