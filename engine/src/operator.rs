//! Operator requests (`multiaz pause | resume | ack | switchover`), as any sidecar
//! receives them.

use crate::engine::Engine;
use crate::event::Event;
use crate::failover::switchover::plan_switchover;
use crate::input::OperatorRequest;
use crate::record::LogEntry;

impl Engine {
    /// Any sidecar accepts an operator request. Pause, resume and ack are safe from
    /// any record; a switchover is checked against this sidecar's view and, when it
    /// fits, proposed (raft forwards a follower's proposal to the leader). The record
    /// refuses a switchover that no longer fits by the time it is committed.
    pub(crate) fn on_operator(&mut self, req: OperatorRequest) {
        match req {
            OperatorRequest::Pause => self.propose(LogEntry::SetPaused { paused: true }),
            OperatorRequest::Resume => self.propose(LogEntry::SetPaused { paused: false }),
            OperatorRequest::Ack => {
                let epoch = self
                    .record
                    .last_automatic_failover()
                    .map_or(self.record.epoch, |j| j.epoch);
                self.propose(LogEntry::Ack { epoch });
            }
            OperatorRequest::Switchover { to } => {
                match plan_switchover(&self.spec, &self.status(), to) {
                    Ok(plan) => {
                        let wall_ms = self.wall_ms();
                        self.propose(LogEntry::FailoverBegin {
                            epoch: plan.epoch,
                            suspects: vec![plan.from],
                            reason: format!("planned switchover from {} to {to}", plan.from),
                            wall_ms,
                            planned: Some(to),
                        });
                    }
                    Err(why) => self.emit(Event::SwitchoverRefused { to, why }),
                }
            }
        }
    }
}
