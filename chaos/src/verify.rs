//! After the run: every acknowledged write on the final master, and every server's
//! table the same (once the replicas have caught up).

use crate::observe::{self, Workload};
use crate::setup::World;
use crate::wall_ms;
use anyhow::{bail, Context};
use multiaz_testcontainers::db;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

#[derive(Debug, Clone, serde::Serialize)]
pub struct Lost {
    pub client: u32,
    pub seq: u64,
    pub acked_at_ms: u64,
    pub gtid: String,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Verdict {
    pub final_master: String,
    pub rows_on_master: usize,
    pub lost: Vec<Lost>,
    /// Each server's `CHECKSUM TABLE` of every table in `app` (the clients' and any
    /// the faults wrote) and its `app.writes` row count.
    pub checksums: BTreeMap<String, (String, u64)>,
    pub consistent: bool,
    /// Every route table in the EC2 API carries the VIP where the mode wants it
    /// ([`World::wanted_routes`], every host up).
    pub routes_as_wanted: bool,
}

pub async fn check(world: &World, workload: &Workload) -> anyhow::Result<Verdict> {
    let mut master = None;
    for i in 0..world.cluster.hosts.len() {
        if let Ok(s) = observe::status(world.admin(i)).await {
            master = s.master();
            if master.is_some() {
                break;
            }
        }
    }
    let master = master.context("no sidecar names a master")? as usize - 1;
    let m = world.db(master);
    let rows = db::sql(m, "SELECT client, seq FROM app.writes")
        .await
        .context("reading the final master's rows")?;
    let present: BTreeSet<(u32, u64)> = rows
        .lines()
        .filter_map(|l| {
            let (c, s) = l.split_once('\t')?;
            Some((c.trim().parse().ok()?, s.trim().parse().ok()?))
        })
        .collect();
    let lost: Vec<Lost> = workload
        .acks
        .iter()
        .filter(|a| !present.contains(&(a.client, a.seq)))
        .map(|a| Lost {
            client: a.client,
            seq: a.seq,
            acked_at_ms: a.at_ms,
            gtid: a.gtid.clone(),
        })
        .collect();

    // The replicas catch up: compare until the tables agree, for up to 60 s.
    if present.is_empty() {
        bail!("the final master {} has no rows at all", m.name);
    }
    let tables: Vec<String> = db::sql(m, "SHOW TABLES FROM app")
        .await
        .context("listing the final master's tables")?
        .lines()
        .map(|t| format!("app.{}", t.trim()))
        .collect();
    let deadline = wall_ms() + 60_000;
    let mut checksums = BTreeMap::new();
    let consistent = loop {
        checksums.clear();
        for h in &world.cluster.hosts {
            let sum = db::sql(
                h,
                &format!(
                    "CHECKSUM TABLE {}; SELECT COUNT(*) FROM app.writes",
                    tables.join(", ")
                ),
            )
            .await
            .with_context(|| format!("checksum on {}", h.name))?;
            let lines: Vec<&str> = sum.lines().collect();
            let (sums, count) = lines.split_at(lines.len().saturating_sub(1));
            let checksum = sums
                .iter()
                .map(|l| l.split('\t').nth(1).unwrap_or("?").trim())
                .collect::<Vec<_>>()
                .join(",");
            let count = count
                .first()
                .and_then(|l| l.trim().parse().ok())
                .unwrap_or(0);
            checksums.insert(h.name.clone(), (checksum, count));
        }
        let agree = checksums.values().collect::<BTreeSet<_>>().len() == 1;
        if agree || wall_ms() > deadline {
            break agree;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let targets = multiaz_testcontainers::moto::vip_targets(
        &world.ec2,
        &world.vpc.route_tables,
        crate::setup::VIP,
    )
    .await?;
    Ok(Verdict {
        routes_as_wanted: targets
            .iter()
            .zip(world.wanted_routes(master, None))
            .all(|(t, (_, want))| t == &want),
        final_master: m.name.clone(),
        rows_on_master: present.len(),
        consistent,
        lost,
        checksums,
    })
}
