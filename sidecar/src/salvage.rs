//! Salvage through the sidecars: the coordinator asks the sidecar on the dead master's
//! host (a signed call on the peer port) to read its local binlog after the new
//! master's position and apply every complete transaction to the new master.
//!
//! The old host's sidecar applies to the new master's mysqld itself, rather than
//! shipping the transactions to the new master's sidecar to apply: the bytes cross the
//! network once either way, and one hop fewer is one thing fewer to fail or time out
//! in the middle of a failover (the simulation does the same).

use crate::adapters::Salvage;
use crate::auth::ClusterKey;
use crate::binlog::{self, apply, ScanOptions};
use crate::mysql::MysqlAdapter;
use crate::peers::{self, CallHandler};
use multiaz_engine::{GtidSet, NodeId, SalvageReport};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;
use tokio::time::Instant;

/// What the coordinator asks of the old master's host.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SalvageCall {
    pub to: NodeId,
    /// The new master's executed set.
    pub after: GtidSet,
    /// How long the old host may spend; it stops applying when this runs out, so no
    /// transaction lands after the coordinator has moved on.
    pub budget_ms: u64,
}

/// The coordinator's side: `Salvage` over a signed call.
#[derive(Clone)]
pub struct PeerSalvage {
    key: ClusterKey,
    peers: Rc<BTreeMap<NodeId, SocketAddr>>,
    timeout: Duration,
}

impl PeerSalvage {
    /// `timeout` is the engine's salvage timeout: the call is abandoned at it.
    pub fn new(key: ClusterKey, peers: BTreeMap<NodeId, SocketAddr>, timeout: Duration) -> Self {
        PeerSalvage {
            key,
            peers: Rc::new(peers),
            timeout,
        }
    }
}

impl Salvage for PeerSalvage {
    async fn salvage(
        &self,
        from: NodeId,
        to: NodeId,
        after: GtidSet,
    ) -> Result<SalvageReport, String> {
        let addr = *self
            .peers
            .get(&from)
            .ok_or_else(|| format!("{from} has no peer address"))?;
        // A margin for the answer to travel back before the engine gives up.
        let budget = self.timeout.saturating_sub(self.timeout / 5);
        let call = SalvageCall {
            to,
            after,
            budget_ms: budget.as_millis() as u64,
        };
        let body = serde_json::to_vec(&call).map_err(|e| e.to_string())?;
        let answer = peers::call(addr, &self.key, &body, self.timeout).await?;
        serde_json::from_slice::<Result<SalvageReport, String>>(&answer)
            .map_err(|e| format!("salvage answer from {from}: {e}"))?
    }
}

/// Where this host's binlog is.
#[derive(Debug, Clone)]
pub struct LocalBinlog {
    pub dir: PathBuf,
    pub index: Option<PathBuf>,
}

/// The old master's side: answers salvage calls from this host's binlog.
pub fn handler(me: NodeId, binlog: Option<LocalBinlog>, mysql: MysqlAdapter) -> CallHandler {
    Rc::new(move |body: Vec<u8>| {
        let (binlog, mysql) = (binlog.clone(), mysql.clone());
        Box::pin(async move {
            let result = match serde_json::from_slice::<SalvageCall>(&body) {
                Ok(call) => serve(me, binlog, mysql, call).await,
                Err(e) => Err(format!("not a salvage call: {e}")),
            };
            serde_json::to_vec(&result).unwrap_or_default()
        })
    })
}

async fn serve(
    me: NodeId,
    binlog: Option<LocalBinlog>,
    mysql: MysqlAdapter,
    call: SalvageCall,
) -> Result<SalvageReport, String> {
    let deadline = Instant::now() + Duration::from_millis(call.budget_ms);
    let binlog = binlog.ok_or_else(|| format!("mysql.binlog_dir is not configured on {me}"))?;
    tracing::info!(to = %call.to, after = %call.after, dir = %binlog.dir.display(), "salvage: reading the local binlog");
    let options = ScanOptions {
        after: Some(call.after),
        keep_events: true,
    };
    let (txs, end) = tokio::task::spawn_blocking(move || {
        binlog::read_tail(&binlog.dir, binlog.index.as_deref(), &options)
    })
    .await
    .map_err(|e| format!("binlog reader: {e}"))??;
    let mut conn = mysql.connect(call.to).await?;
    let mut report = apply::apply(&mut conn, &txs, Some(deadline)).await?;
    let _ = conn.disconnect().await;
    if let Some(torn) = end.torn {
        report.not_recovered.push(torn.to_string());
    }
    if let Some(d) = end.real_damage() {
        report.stopped.get_or_insert(format!("binlog damaged: {d}"));
    }
    tracing::info!(
        found = txs.len(),
        recovered = report.recovered,
        not_recovered = report.not_recovered.len(),
        stopped = ?report.stopped,
        "salvage: done"
    );
    Ok(report)
}
