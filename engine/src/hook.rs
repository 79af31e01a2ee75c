//! Hooks: operator commands run before and after failovers and switchovers. The
//! engine decides when and with what details; the driver runs the command.

use crate::cluster::NodeId;
use crate::command::SalvageReport;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HookPoint {
    /// The master is dead; nothing has been done yet. A veto stops this attempt.
    PreFailover,
    PostFailover,
    /// The switchover is committed; nothing has been done to a server yet. A veto
    /// cancels it.
    PreSwitchover,
    PostSwitchover,
}

impl HookPoint {
    pub const ALL: [HookPoint; 4] = [
        HookPoint::PreFailover,
        HookPoint::PostFailover,
        HookPoint::PreSwitchover,
        HookPoint::PostSwitchover,
    ];

    pub fn name(self) -> &'static str {
        match self {
            HookPoint::PreFailover => "pre-failover",
            HookPoint::PostFailover => "post-failover",
            HookPoint::PreSwitchover => "pre-switchover",
            HookPoint::PostSwitchover => "post-switchover",
        }
    }

    pub fn is_pre(self) -> bool {
        matches!(self, HookPoint::PreFailover | HookPoint::PreSwitchover)
    }
}

impl fmt::Display for HookPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a hook is told: the JSON on its stdin, and (flattened) its environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookCall {
    pub point: HookPoint,
    /// The epoch the failover or switchover runs (or would run) in.
    pub epoch: u64,
    pub old_master: Option<NodeId>,
    /// The target of a switchover, the promoted node of a completed failover.
    pub new_master: Option<NodeId>,
    pub reason: String,
    /// Post hooks: did it complete? (`None` for pre hooks.)
    pub success: Option<bool>,
    /// Post hooks: why it failed, if it did.
    pub why: Option<String>,
    /// Post hooks: the coordinator's measure from the decision to the end.
    pub duration_ms: Option<u64>,
    /// Each server's executed GTID set as the coordinator last saw it.
    pub positions: BTreeMap<NodeId, String>,
    /// Post-failover: the binlog salvage's outcome (`None`: none was possible).
    pub salvage: Option<Result<SalvageReport, String>>,
}
