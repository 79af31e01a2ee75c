//! Is the master dead? A pure verdict over the sidecars' recent reports.
//!
//! Dead means either the master's own sidecar says its mysqld is down, or a majority
//! of all sidecars failed `probe_failures` probes in a row, none reached it on its last
//! probe, and no replica's IO thread is still connected to it (orchestrator's
//! DeadMaster). A master that any sidecar still reaches, or that still feeds a replica,
//! is alive as far as failover is concerned: a network problem between one sidecar and
//! the master is not a reason to take the master away from everyone else.

use crate::cluster::{ClusterSpec, NodeId};
use crate::message::{LocalView, Report};
use std::collections::BTreeMap;

/// Returns why the master is dead, or `None` when it must not be failed over.
/// `reports` holds only fresh reports (the caller drops stale ones), the caller's own
/// included.
pub fn dead_master_reason(
    spec: &ClusterSpec,
    master: NodeId,
    reports: &BTreeMap<NodeId, &Report>,
) -> Option<String> {
    let about_master: BTreeMap<NodeId, &Report> = reports
        .iter()
        .filter(|(_, r)| r.master == Some(master))
        .map(|(k, v)| (*k, *v))
        .collect();
    if let Some(own) = about_master.get(&master) {
        if matches!(own.local, Some(LocalView::Down)) {
            return Some(format!("{master}'s own sidecar reports its mysqld down"));
        }
        if matches!(own.local, Some(LocalView::Up(_))) {
            return None;
        }
    }
    if about_master
        .values()
        .any(|r| r.master_reachable == Some(true))
    {
        return None;
    }
    if about_master
        .values()
        .any(|r| r.local.as_ref().is_some_and(|l| l.receives_from(master)))
    {
        return None;
    }
    let failing = about_master
        .values()
        .filter(|r| {
            r.master_reachable == Some(false) && r.master_failures >= spec.timing.probe_failures
        })
        .count();
    (failing >= spec.majority()).then(|| {
        format!(
            "{failing} of {} sidecars failed {} probes of {master} in a row and no replica receives from it",
            spec.nodes.len(),
            spec.timing.probe_failures
        )
    })
}
