//! Injecting a fault on the master's host, and healing it afterwards.

use crate::api_proxy::Mode;
use crate::cli::Fault;
use crate::setup::{accept_vip, World};
use multiaz_testcontainers::{mariadb, Host};
use std::collections::BTreeMap;
use std::net::IpAddr;

impl Fault {
    /// The EC2 API's behaviour from the fault on (until [`Fault::api_after`] says otherwise).
    pub fn api_mode(self, share: f64) -> Mode {
        match self {
            Fault::ApiThrottle => Mode::Throttle(share),
            Fault::ApiOutage => Mode::Outage,
            _ => Mode::Pass,
        }
    }

    /// What happens to the master's host; the API faults kill its mysqld.
    fn on_host(self) -> HostFault {
        match self {
            Fault::MysqldKill | Fault::ApiThrottle | Fault::ApiOutage => HostFault::MysqldKill,
            Fault::HostKill => HostFault::HostKill,
            Fault::AzPartition => HostFault::Partition,
        }
    }
}

enum HostFault {
    MysqldKill,
    HostKill,
    Partition,
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

pub async fn inject(world: &World, fault: Fault, m: usize) -> anyhow::Result<()> {
    let host = world.db(m);
    match fault.on_host() {
        HostFault::MysqldKill => mariadb::kill(host).await,
        HostFault::HostKill => host.crash().await,
        HostFault::Partition => {
            let (inside, outside) = sides(world, m);
            cut(&inside, &outside, false).await?;
            cut(&outside, &inside, false).await
        }
    }
}

pub async fn heal(world: &World, fault: Fault, m: usize) -> anyhow::Result<()> {
    let host = world.db(m);
    let id = World::node_id(m) as u32;
    match fault.on_host() {
        HostFault::MysqldKill => mariadb::start(host, id, false).await,
        HostFault::HostKill => {
            host.boot().await?;
            accept_vip(host).await?;
            mariadb::start(host, id, false).await?;
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
/// do with a server that holds errant transactions: a fresh data directory, the
/// master's data from a consistent dump (not binlogged here), and replication position
/// set to where the dump was taken. The server is started without networking while
/// this happens, so that its sidecar does not repoint it half-loaded; restarted
/// normally, its sidecar finds nothing errant and rejoins it.
pub async fn rebuild(world: &World, m: usize, n: usize) -> anyhow::Result<()> {
    let host = world.db(m);
    let id = World::node_id(m) as u32;
    let master_ip = world.ip(n);
    mariadb::kill(host).await?;
    host.sh(&format!("rm -rf {}", mariadb::DATADIR)).await?;
    mariadb::start_with(host, id, false, "--skip-networking").await?;
    let s = &world.secrets;
    mariadb::create_users(host, &s.admin_password, &s.app_password).await?;
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
            u = mariadb::ADMIN_USER,
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
        mariadb::SOCKET
    ))
    .await?;
    mariadb::sql(
        host,
        &format!(
            "RESET MASTER; SET GLOBAL gtid_binlog_state = '{state}'; \
             SET GLOBAL gtid_slave_pos = '{pos}';"
        ),
    )
    .await?;
    mariadb::kill(host).await?;
    mariadb::start(host, id, false).await
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
