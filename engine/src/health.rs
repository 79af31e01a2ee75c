//! What a proxy or a load balancer asks of a sidecar (`/primary`, `/replica`): is
//! this node's server the one to send writes to, or a replica fit for reads. A second
//! way for clients to find the master, with no EC2 call in it. Judged from the same
//! status `multiaz status` shows; safety never rests on it: a server the answer is
//! stale for is read_only (the fence), so a stale "primary" can only send writes to a
//! server that refuses them.

use crate::message::LocalView;
use crate::status::{EngineStatus, Role};

impl EngineStatus {
    /// `Ok` when this node's mysqld takes writes: the master of record, no failover
    /// under way, its write lease held, its mysqld up and writable. Otherwise why not.
    pub fn primary(&self) -> Result<(), String> {
        if self.record.master != Some(self.me) {
            return Err(match self.record.master {
                Some(m) => format!("not the master: {m} is"),
                None => "no master of record".into(),
            });
        }
        if let Some(f) = &self.record.failover {
            return Err(format!("failover {} under way", f.epoch));
        }
        if !self.lease_valid {
            return Err("the write lease is not held".into());
        }
        match &self.local {
            LocalView::Up(Some(s)) if !s.read_only => Ok(()),
            LocalView::Up(Some(_)) => Err("mysqld is read_only".into()),
            _ => Err("mysqld is down or not probed yet".into()),
        }
    }

    /// `Ok` when this node's mysqld is a replica fit for reads: a replica of record
    /// (not quarantined), up, at most `max_lag` transactions behind the master when a
    /// bound is given (a lag not known then fails). Otherwise why not.
    pub fn replica(&self, max_lag: Option<u64>) -> Result<(), String> {
        let Some(me) = self.nodes.get(&self.me) else {
            return Err("not a member".into());
        };
        if me.role != Role::Replica {
            return Err(format!("not a replica: {}", me.role.name()));
        }
        if !matches!(self.local, LocalView::Up(Some(_))) {
            return Err("mysqld is down or not probed yet".into());
        }
        match (max_lag, me.lag_transactions) {
            (None, _) => Ok(()),
            (Some(max), Some(lag)) if lag <= max => Ok(()),
            (Some(max), Some(lag)) => Err(format!("{lag} transactions behind (at most {max})")),
            (Some(_), None) => Err("lag unknown (the master's position is not known)".into()),
        }
    }
}
