//! Salvage through the sidecars: the coordinator asks the sidecar on the dead master's
//! host (a signed call on the peer port) to read its local binlog after the new
//! master's position and apply every complete transaction to the new master.
//!
//! The old host's sidecar applies to the new master's mysqld itself, rather than
//! shipping the transactions to the new master's sidecar to apply: the bytes cross the
//! network once either way, and one hop fewer is one thing fewer to fail or time out
//! in the middle of a failover (the simulation does the same).

use crate::adapters::auth::ClusterKey;
use crate::adapters::binlog_apply as apply;
use crate::adapters::mysql::MysqlAdapter;
use crate::adapters::peers::{self, CallHandler};
use crate::adapters::telemetry::Telemetry;
use multiaz_binlog::{self as binlog, ScanOptions};
use multiaz_driver::adapters::Salvage;
use multiaz_engine::{ClusterRecord, GtidSet, NodeId, SalvageReport};
use serde::{Deserialize, Serialize};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;
use tokio::time::Instant;

/// What the coordinator asks of the old master's host, and on whose authority.
///
/// It cannot be replayed: like every frame on the peer port it is bound to the
/// connection it came on (`auth.rs`), and a connection must carry its first frame
/// within seconds of opening. So the budget, counted from arrival, is its expiry. What
/// it may do is bound by the callee's own record ([`admit`]).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SalvageCall {
    /// The failover it belongs to.
    pub epoch: u64,
    /// The coordinator's raft term and id, for the callee's log.
    pub term: u64,
    pub coordinator: NodeId,
    /// Whose binlog is read: the callee itself.
    pub from: NodeId,
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
    me: NodeId,
    key: ClusterKey,
    peers: Rc<BTreeMap<NodeId, SocketAddr>>,
    /// Where the coordinator's current term is read.
    telemetry: Telemetry,
}

impl PeerSalvage {
    pub fn new(
        me: NodeId,
        key: ClusterKey,
        peers: BTreeMap<NodeId, SocketAddr>,
        telemetry: Telemetry,
    ) -> Self {
        PeerSalvage {
            me,
            key,
            peers: Rc::new(peers),
            telemetry,
        }
    }
}

impl Salvage for PeerSalvage {
    async fn salvage(
        &self,
        epoch: u64,
        from: NodeId,
        to: NodeId,
        after: GtidSet,
        within: Duration,
    ) -> Result<SalvageReport, String> {
        let addr = *self
            .peers
            .get(&from)
            .ok_or_else(|| format!("{from} has no peer address"))?;
        // The call is abandoned at `within`, when the engine stops waiting.
        let budget = multiaz_driver::adapters::salvage_budget(within);
        if budget.is_zero() {
            return Err("no time left for the salvage (it waited behind a state write)".into());
        }
        let call = SalvageCall {
            epoch,
            term: self.telemetry.status().map_or(0, |s| s.term),
            coordinator: self.me,
            from,
            to,
            after,
            budget_ms: budget.as_millis() as u64,
        };
        let body = serde_json::to_vec(&call).map_err(|e| e.to_string())?;
        let own_ip = self.peers.get(&self.me).map(|a| a.ip());
        let answer = peers::call(own_ip, addr, &self.key, &body, within).await?;
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

/// The most transaction bytes one salvage holds in memory. A failed master's unsent
/// tail is normally a few transactions; more than this is left in the binlog, named in
/// the report, for `multiaz binlog salvage` by hand.
pub const MAX_SALVAGE_BYTES: u64 = 256 << 20;

/// The old master's side of salvage.
#[derive(Clone)]
pub struct Callee {
    pub me: NodeId,
    pub binlog: Option<LocalBinlog>,
    pub mysql: MysqlAdapter,
    /// This sidecar's own view of the cluster record.
    pub telemetry: Telemetry,
    /// The longest this host spends on one call, whatever the call asks.
    pub max_budget: Duration,
}

/// Answers salvage calls from this host's binlog, one at a time.
pub fn handler(callee: Callee) -> CallHandler {
    let busy = Rc::new(Cell::new(false));
    Rc::new(move |body: Vec<u8>| {
        let (callee, busy) = (callee.clone(), busy.clone());
        Box::pin(async move {
            let mut result = match serde_json::from_slice::<SalvageCall>(&body) {
                Err(e) => Err(format!("not a salvage call: {e}")),
                Ok(call) => match Busy::take(&busy) {
                    Some(_running) => callee.serve(call).await,
                    None => Err("a salvage is already running on this host".to_string()),
                },
            };
            match &mut result {
                Err(why) => tracing::warn!("salvage call refused or failed: {why}"),
                Ok(report) => summarise(report),
            }
            serde_json::to_vec(&result).unwrap_or_default()
        })
    })
}

/// GTIDs named one by one in an answer at most: the answer is one peer frame (1 MiB),
/// and a binlog tail can hold far more transactions than that names.
const NAMED_AT_MOST: usize = 1000;

/// Keeps the answer within a frame: the first GTIDs not recovered, then how many more.
fn summarise(report: &mut SalvageReport) {
    let n = report.not_recovered.len();
    if n > NAMED_AT_MOST {
        report.not_recovered.truncate(NAMED_AT_MOST);
        report
            .not_recovered
            .push(format!("... and {} more", n - NAMED_AT_MOST));
    }
}

/// Marks a salvage as running until dropped, however the call ends (answered,
/// failed, or its future dropped).
struct Busy(Rc<Cell<bool>>);

impl Busy {
    /// `None` when a salvage is running already.
    fn take(flag: &Rc<Cell<bool>>) -> Option<Busy> {
        (!flag.replace(true)).then(|| Busy(flag.clone()))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.set(false);
    }
}

/// What this sidecar's record says of a salvage call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    Serve,
    /// The record may not have caught up with the coordinator's yet.
    Wait(String),
    Refuse(String),
}

/// Serve only the salvage of a failover this sidecar's own record shows: of this
/// epoch, with this node a failed master of it (a suspect, the master of record or an
/// earlier failed master read whole before) and `to` the committed candidate. A call for another
/// epoch, another candidate, or a failover that is over is refused.
pub fn admit(me: NodeId, call: &SalvageCall, record: Option<&ClusterRecord>) -> Admission {
    if call.from != me {
        return Admission::Refuse(format!("addressed to {}, this is {me}", call.from));
    }
    if call.to == me {
        return Admission::Refuse(format!("{me} cannot salvage into itself"));
    }
    let Some(record) = record else {
        return Admission::Wait("this sidecar has not started yet".into());
    };
    if record.epoch > call.epoch {
        return Admission::Refuse(format!(
            "failover {} is over: the record is at epoch {}",
            call.epoch, record.epoch
        ));
    }
    let Some(f) = record.failover.as_ref().filter(|f| f.epoch == call.epoch) else {
        return if record.epoch == call.epoch {
            Admission::Refuse(format!("failover {} is over", call.epoch))
        } else {
            Admission::Wait(format!(
                "the record is at epoch {}, the call for {}",
                record.epoch, call.epoch
            ))
        };
    };
    match f.candidate {
        None => Admission::Wait(format!("failover {} has no candidate yet", f.epoch)),
        Some(c) if c != call.to => Admission::Refuse(format!(
            "failover {}'s candidate is {c}, not {}",
            f.epoch, call.to
        )),
        Some(_) => {
            // The engine's own choice of source (failover.rs, `salvage`): a suspect,
            // the master of record, or an earlier failed master whose binlog was read
            // whole into the cluster (one never read whole may hold errant writes).
            let failed = f.suspects.contains(&me)
                || record.master == Some(me)
                || (record.quarantined.contains_key(&me) && record.salvaged_whole(me));
            if failed {
                Admission::Serve
            } else {
                Admission::Refuse(format!(
                    "{me} is not a failed master of failover {}",
                    f.epoch
                ))
            }
        }
    }
}

impl Callee {
    /// What this sidecar's own record says of `call` now.
    fn admission(&self, call: &SalvageCall) -> Admission {
        self.telemetry
            .with_record(|record| admit(self.me, call, record))
    }

    async fn serve(&self, call: SalvageCall) -> Result<SalvageReport, String> {
        let me = self.me;
        let budget = Duration::from_millis(call.budget_ms).min(self.max_budget);
        let deadline = Instant::now() + budget;
        // The coordinator saw the candidate committed; this sidecar may be a few
        // heartbeats behind. It waits for its own record, a part of the budget at most.
        let patience = Instant::now() + (budget / 2).min(Duration::from_secs(2));
        loop {
            match self.admission(&call) {
                Admission::Serve => break,
                Admission::Refuse(why) => return Err(format!("salvage refused: {why}")),
                Admission::Wait(why) if Instant::now() >= patience => {
                    return Err(format!("salvage refused: {why}"))
                }
                Admission::Wait(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        if self.mysql.is_writable(me).await {
            return Err(format!(
                "salvage refused: the mysqld on {me} is up and writable, the live writer, not a failed master"
            ));
        }
        let binlog = self
            .binlog
            .clone()
            .ok_or_else(|| format!("mysql.binlog_dir is not configured on {me}"))?;
        tracing::info!(
            epoch = call.epoch,
            term = call.term,
            coordinator = %call.coordinator,
            to = %call.to,
            after = %call.after,
            dir = %binlog.dir.display(),
            "salvage: reading the local binlog"
        );
        let options = ScanOptions {
            after: Some(call.after.clone()),
            keep_events: true,
        };
        let (txs, end) = tokio::task::spawn_blocking(move || {
            binlog::read_tail_within(
                &binlog.dir,
                binlog.index.as_deref(),
                &options,
                MAX_SALVAGE_BYTES,
            )
        })
        .await
        .map_err(|e| format!("binlog reader: {e}"))??;
        let late = || format!("the salvage budget of {budget:?} ran out");
        let mut conn = tokio::time::timeout_at(deadline, self.mysql.connect(call.to))
            .await
            .map_err(|_| late())??;
        // The candidate has applied its relay log (the engine waited for that), but its
        // replication applier may still hold a transaction the relay log has only in
        // part, its IO thread being fenced: on MySQL that applier owns the transaction's
        // GTID, and the salvage's `SET gtid_next` to the same GTID would wait for it
        // for ever (on MariaDB it holds the rows). Nothing more is wanted from
        // replication on a candidate about to be promoted: it is stopped first — if
        // the failover still stands (reading the binlog may have taken a while).
        if let Admission::Refuse(why) = self.admission(&call) {
            return Err(format!("salvage no longer wanted: {why}"));
        }
        tokio::time::timeout_at(deadline, self.mysql.stop_replication(&mut conn, call.to))
            .await
            .map_err(|_| late())?
            .map_err(|e| format!("stopping replication on {}: {e}", call.to))?;
        // Asked again before each transaction: once this sidecar's record shows the
        // failover over (the coordinator gave up waiting and went on), nothing more
        // lands on a master that may already take writes.
        let still_wanted = || match self.admission(&call) {
            Admission::Refuse(why) => Err(why),
            Admission::Serve | Admission::Wait(_) => Ok(()),
        };
        let mut report = apply::apply(&mut conn, &txs, Some(deadline), &still_wanted).await?;
        let _ = conn.disconnect().await;
        if let Some(torn) = end.torn {
            report.not_recovered.push(torn.to_string());
        }
        if let Some(d) = end.real_damage() {
            report.stopped.get_or_insert(format!("binlog damaged: {d}"));
        }
        if let Some(gtid) = end.left_out {
            report.stopped.get_or_insert(format!(
                "more than {} MiB after the new master's position: {gtid} and what follows left in the binlog (multiaz binlog salvage reads it)",
                MAX_SALVAGE_BYTES >> 20
            ));
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use multiaz_engine::FailoverState;

    const N1: NodeId = NodeId(1);
    const N2: NodeId = NodeId(2);
    const N3: NodeId = NodeId(3);

    fn call(epoch: u64, to: NodeId) -> SalvageCall {
        SalvageCall {
            epoch,
            term: 4,
            coordinator: N2,
            from: N1,
            to,
            after: GtidSet::empty(multiaz_engine::Flavour::Mariadb),
            budget_ms: 1000,
        }
    }

    /// N1 failed at epoch 2; the failover's candidate is `candidate`.
    fn record(epoch: u64, candidate: Option<NodeId>, under_way: bool) -> ClusterRecord {
        ClusterRecord {
            epoch,
            master: Some(N1),
            failover: under_way.then(|| FailoverState {
                epoch,
                suspects: vec![N1],
                reason: "mysqld down".into(),
                begun_wall_ms: 0,
                candidate,
                planned: None,
            }),
            paused: false,
            journal: Vec::new(),
            quarantined: BTreeMap::new(),
            acked_epoch: 0,
        }
    }

    #[test]
    fn an_answer_names_at_most_a_thousand_gtids_and_fits_a_frame() {
        let mut report = SalvageReport {
            recovered: 3,
            not_recovered: (0..100_000).map(|i| format!("0-1-{i}")).collect(),
            stopped: Some("binlog damaged".into()),
        };
        summarise(&mut report);
        assert_eq!(report.not_recovered.len(), NAMED_AT_MOST + 1);
        assert_eq!(report.not_recovered.last().unwrap(), "... and 99000 more");
        let answer = serde_json::to_vec(&Ok::<_, String>(report)).unwrap();
        assert!(
            answer.len() < crate::adapters::peers::MAX_FRAME / 8,
            "{}",
            answer.len()
        );
    }

    #[test]
    fn only_the_failover_in_the_callees_own_record_is_served() {
        let r = record(2, Some(N2), true);
        assert_eq!(admit(N1, &call(2, N2), Some(&r)), Admission::Serve);
        // Another epoch: an old call, or one from the future.
        assert!(matches!(
            admit(N1, &call(1, N2), Some(&r)),
            Admission::Refuse(_)
        ));
        assert!(matches!(
            admit(N1, &call(3, N2), Some(&r)),
            Admission::Wait(_)
        ));
        // Another candidate than the committed one.
        assert!(matches!(
            admit(N1, &call(2, N3), Some(&r)),
            Admission::Refuse(_)
        ));
        // Not this node's binlog, or into itself.
        assert!(matches!(
            admit(N3, &call(2, N2), Some(&r)),
            Admission::Refuse(_)
        ));
        let mut into_self = call(2, N1);
        into_self.from = N1;
        assert!(matches!(
            admit(N1, &into_self, Some(&r)),
            Admission::Refuse(_)
        ));
        // This node is no failed master of that failover.
        let mut other = record(2, Some(N2), true);
        other.master = Some(N3);
        other.failover.as_mut().unwrap().suspects = vec![N3];
        assert!(matches!(
            admit(N1, &call(2, N2), Some(&other)),
            Admission::Refuse(_)
        ));
        // Each way of being a failed master, alone, is enough.
        let mut master_only = other.clone();
        master_only.master = Some(N1);
        assert_eq!(
            admit(N1, &call(2, N2), Some(&master_only)),
            Admission::Serve
        );
        let mut suspect_only = other.clone();
        suspect_only.failover.as_mut().unwrap().suspects = vec![N3, N1];
        assert_eq!(
            admit(N1, &call(2, N2), Some(&suspect_only)),
            Admission::Serve
        );
        // An earlier failed master: only when its binlog was read whole then.
        let mut earlier = other.clone();
        earlier.quarantined.insert(N1, "failed master".into());
        assert!(
            matches!(
                admit(N1, &call(2, N2), Some(&earlier)),
                Admission::Refuse(_)
            ),
            "never read whole: it may hold errant writes"
        );
        earlier.journal.push(multiaz_engine::JournalEntry {
            epoch: 1,
            old_master: Some(N1),
            new_master: Some(N3),
            reason: "mysqld down".into(),
            begun_wall_ms: 0,
            ended_wall_ms: 1,
            outcome: multiaz_engine::Outcome::Completed(multiaz_engine::FailoverReport {
                salvaged_from: Some(N1),
                salvage: Some(Ok(SalvageReport::default())),
                ..Default::default()
            }),
            planned: false,
        });
        assert_eq!(admit(N1, &call(2, N2), Some(&earlier)), Admission::Serve);
        // The failover is over: the coordinator has moved on.
        assert!(matches!(
            admit(N1, &call(2, N2), Some(&record(2, Some(N2), false))),
            Admission::Refuse(_)
        ));
        // Not caught up yet: no candidate committed here, or not started.
        assert!(matches!(
            admit(N1, &call(2, N2), Some(&record(2, None, true))),
            Admission::Wait(_)
        ));
        assert!(matches!(admit(N1, &call(2, N2), None), Admission::Wait(_)));
    }
}
