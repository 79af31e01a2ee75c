//! The router, run inside the router container: it makes the VIP real the way a VPC
//! does. Each client's packets follow the route table of its subnet (a policy rule per
//! client source address → a kernel table per route table); every 100 ms it reads the
//! route tables from the EC2 API and points each kernel table's VIP route at the
//! address of the interface the VIP route names. The data plane reads moto directly,
//! not through the API proxy: an EC2 control-plane outage leaves routes as they were,
//! as in AWS.
//!
//! Log lines: `route T_MS TABLE ENI IP` when a table's VIP target changes (IP `-`:
//! no route, packets dropped), `err T_MS WHAT` when the API cannot be read.

use crate::agent_log::AgentLog;
use crate::cli::RouterArgs;
use crate::wall_ms;
use std::collections::BTreeMap;
use std::time::Duration;

const POLL: Duration = Duration::from_millis(100);

fn ip(args: &[&str]) -> anyhow::Result<()> {
    multiaz_testcontainers::run("ip", args)
}

pub async fn run(args: RouterArgs) -> anyhow::Result<()> {
    let mut log = AgentLog::open(&args.log)?;
    let mut line = |text: String| log.line(text);
    let enis: BTreeMap<String, String> = args.enis.iter().cloned().collect();
    // Kernel table 101, 102, … per route table, selected by the client's address.
    let mut kernel_table = BTreeMap::new();
    for (i, (table, source)) in args.tables.iter().enumerate() {
        let n = (101 + i).to_string();
        ip(&["rule", "add", "from", source, "lookup", &n, "priority", &n])?;
        ip(&[
            "route",
            "replace",
            "blackhole",
            &format!("{}/32", args.vip),
            "table",
            &n,
        ])?;
        kernel_table.insert(table.clone(), n);
    }
    let client = multiaz_sidecar::adapters::ec2::client(
        multiaz_testcontainers::moto::REGION,
        Some(&args.endpoint),
        Duration::from_secs(2),
    )
    .await;
    let ids: Vec<String> = kernel_table.keys().cloned().collect();
    let mut applied: BTreeMap<String, String> = BTreeMap::new();
    loop {
        match multiaz_testcontainers::moto::vip_targets(&client, &ids, args.vip).await {
            Ok(targets) => {
                for (table, eni) in ids.iter().zip(targets) {
                    if applied.get(table) == Some(&eni) {
                        continue;
                    }
                    let n = &kernel_table[table];
                    let dest = format!("{}/32", args.vip);
                    let to = enis.get(&eni);
                    match to {
                        Some(addr) => ip(&["route", "replace", &dest, "via", addr, "table", n])?,
                        None => ip(&["route", "replace", "blackhole", &dest, "table", n])?,
                    }
                    let shown = if eni.is_empty() { "-" } else { eni.as_str() };
                    let addr = to.map_or("-", |a| a.as_str());
                    line(format!("route {} {table} {shown} {addr}", wall_ms()))?;
                    applied.insert(table.clone(), eni);
                }
            }
            Err(e) => line(format!(
                "err {} {}",
                wall_ms(),
                format!("{e:#}").replace('\n', " ")
            ))?,
        }
        tokio::time::sleep(POLL).await;
    }
}
