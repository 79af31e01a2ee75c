//! What a running sidecar tells the outside: log lines for every engine event, the
//! Prometheus metrics, and the status snapshot the admin API serves.
//!
//! The driver calls [`Telemetry`] (as its [`Observer`]) on its own thread; the admin
//! server reads the snapshot from another task, hence the mutex.

use multiaz_driver::adapters::Observer;
use multiaz_engine::{
    Engine, EngineStatus, Event, FailoverReport, LocalView, Outcome, Role, RouteState, Severity,
    Time,
};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

type Labels = Vec<(String, String)>;

struct Metrics {
    epoch: Gauge,
    coordinator: Gauge,
    role: Family<Labels, Gauge>,
    failovers: Gauge,
    switchovers: Gauge,
    failover_blocked: Gauge,
    paused: Gauge,
    salvaged: Gauge,
    not_salvaged: Gauge,
    last_failover_seconds: Gauge<f64, AtomicU64>,
    failover_in_progress: Gauge,
    master_probe_failures: Gauge,
    lag: Family<Labels, Gauge>,
    mysqld_up: Family<Labels, Gauge>,
    ec2_errors: Family<Labels, Counter>,
    peer_frames_dropped: Counter,
    fence_failures: Family<Labels, Counter>,
    route_state: Family<Labels, Gauge>,
    forwarding: Gauge,
}

impl Metrics {
    fn register(registry: &mut Registry) -> Metrics {
        let m = Metrics {
            epoch: Gauge::default(),
            coordinator: Gauge::default(),
            role: Family::default(),
            failovers: Gauge::default(),
            switchovers: Gauge::default(),
            failover_blocked: Gauge::default(),
            paused: Gauge::default(),
            salvaged: Gauge::default(),
            not_salvaged: Gauge::default(),
            last_failover_seconds: Gauge::default(),
            failover_in_progress: Gauge::default(),
            master_probe_failures: Gauge::default(),
            lag: Family::default(),
            mysqld_up: Family::default(),
            ec2_errors: Family::default(),
            peer_frames_dropped: Counter::default(),
            fence_failures: Family::default(),
            route_state: Family::default(),
            forwarding: Gauge::default(),
        };
        let r = registry;
        r.register(
            "multiaz_epoch",
            "Failover epoch of the cluster record",
            m.epoch.clone(),
        );
        r.register(
            "multiaz_coordinator",
            "1 when this sidecar is the raft leader (the coordinator)",
            m.coordinator.clone(),
        );
        r.register(
            "multiaz_role",
            "1 for this node's role (master, candidate, replica, quarantined, witness)",
            m.role.clone(),
        );
        // A gauge, not a counter: it is read from the replicated journal, so it is the
        // cluster's count and the same on every sidecar.
        r.register(
            "multiaz_salvaged_transactions",
            "Transactions recovered from dead masters' binlogs, over the journal's failovers",
            m.salvaged.clone(),
        );
        r.register(
            "multiaz_salvage_not_recovered",
            "Transactions found in dead masters' binlogs but not applied, over the journal",
            m.not_salvaged.clone(),
        );
        r.register(
            "multiaz_failovers",
            "Completed failovers in the cluster's journal",
            m.failovers.clone(),
        );
        r.register(
            "multiaz_switchovers",
            "Completed planned switchovers in the cluster's journal",
            m.switchovers.clone(),
        );
        r.register(
            "multiaz_failover_blocked",
            "1 while automatic failover is blocked after the last one (until `multiaz ack`)",
            m.failover_blocked.clone(),
        );
        r.register(
            "multiaz_paused",
            "1 while automatic failover is paused (`multiaz pause`)",
            m.paused.clone(),
        );
        r.register(
            "multiaz_last_failover_duration_seconds",
            "Decision to promotion of the last completed failover",
            m.last_failover_seconds.clone(),
        );
        r.register(
            "multiaz_failover_in_progress",
            "1 while a failover has begun and not ended",
            m.failover_in_progress.clone(),
        );
        r.register(
            "multiaz_master_probe_failures",
            "Consecutive failed probes of the master by this sidecar",
            m.master_probe_failures.clone(),
        );
        r.register(
            "multiaz_replication_lag_transactions",
            "Transactions the master executed that a replica has not",
            m.lag.clone(),
        );
        r.register(
            "multiaz_mysqld_up",
            "1 when a node's mysqld answered its sidecar's last probe",
            m.mysqld_up.clone(),
        );
        r.register(
            "multiaz_ec2_api_errors",
            "EC2 API errors by code",
            m.ec2_errors.clone(),
        );
        r.register(
            "multiaz_peer_frames_dropped",
            "Peer frames dropped: oversized, unauthenticated, altered or replayed",
            m.peer_frames_dropped.clone(),
        );
        r.register(
            "multiaz_fence_failures",
            "read_only changes that failed: `self-fence` and `unfence` of this sidecar's own \
             mysqld, `suspect` for a failed master the coordinator could not make read_only",
            m.fence_failures.clone(),
        );
        r.register(
            "multiaz_route_state",
            "1 for each VIP route table's state, on the coordinator once a master is settled: \
             `moved` (confirmed at the master), `forwarding` (not moved, but where it points \
             forwards to the master), `stuck` (clients may not reach the master)",
            m.route_state.clone(),
        );
        r.register(
            "multiaz_forwarding",
            "1 while this host forwards the VIP's traffic to another member's mysqld",
            m.forwarding.clone(),
        );
        m
    }
}

struct Shared {
    status: Mutex<Option<EngineStatus>>,
    registry: Registry,
    metrics: Metrics,
}

/// Cheap to clone; every clone sees the same snapshot and metrics.
#[derive(Clone)]
pub struct Telemetry {
    shared: Arc<Shared>,
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}

impl Telemetry {
    pub fn new() -> Telemetry {
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        Telemetry {
            shared: Arc::new(Shared {
                status: Mutex::new(None),
                registry,
                metrics,
            }),
        }
    }

    /// The latest status, `None` before the engine's first step.
    pub fn status(&self) -> Option<EngineStatus> {
        self.shared.status.lock().map(|s| s.clone()).unwrap_or(None)
    }

    /// `f` of the latest cluster record (`None` before the engine's first step),
    /// without copying the status.
    pub fn with_record<T>(&self, f: impl FnOnce(Option<&multiaz_engine::ClusterRecord>) -> T) -> T {
        let status = self.shared.status.lock();
        f(status
            .as_ref()
            .ok()
            .and_then(|s| s.as_ref())
            .map(|s| &s.record))
    }

    /// The metrics in Prometheus text format.
    pub fn metrics_text(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.shared.registry);
        out
    }

    pub fn ec2_error(&self, code: &str) {
        self.shared
            .metrics
            .ec2_errors
            .get_or_create(&vec![("code".to_string(), code.to_string())])
            .inc();
    }

    pub fn peer_frame_dropped(&self) {
        self.shared.metrics.peer_frames_dropped.inc();
    }

    fn update(&self, status: EngineStatus) {
        let m = &self.shared.metrics;
        m.epoch.set(status.record.epoch as i64);
        m.coordinator.set(status.coordinator as i64);
        m.failover_in_progress
            .set(status.record.failover.is_some() as i64);
        m.master_probe_failures.set(status.master_failures as i64);
        m.failover_blocked
            .set(status.failover_blocked_until_wall_ms.is_some() as i64);
        m.paused.set(status.record.paused as i64);
        let completed = |planned: bool| -> Vec<&FailoverReport> {
            status
                .record
                .journal
                .iter()
                .filter(|j| j.planned == planned)
                .filter_map(|j| match &j.outcome {
                    Outcome::Completed(r) => Some(r),
                    _ => None,
                })
                .collect()
        };
        m.switchovers.set(completed(true).len() as i64);
        let completed = completed(false);
        m.failovers.set(completed.len() as i64);
        if let Some(r) = completed.last() {
            m.last_failover_seconds.set(r.duration_ms as f64 / 1000.0);
        }
        let (got, missed) = completed
            .iter()
            .filter_map(|r| r.salvage.as_ref()?.as_ref().ok())
            .fold((0u64, 0u64), |(g, n), s| {
                (g + s.recovered, n + s.not_recovered.len() as u64)
            });
        m.salvaged.set(got as i64);
        m.not_salvaged.set(missed as i64);
        let mine = status.nodes.get(&status.me).map(|n| n.role);
        for role in Role::ALL {
            m.role
                .get_or_create(&vec![("role".to_string(), role.name().to_string())])
                .set((mine == Some(role)) as i64);
        }
        for n in status.nodes.values() {
            let label = vec![("node".to_string(), n.name.clone())];
            if let Some(lag) = n.lag_transactions {
                m.lag.get_or_create(&label).set(lag as i64);
            }
            if let Some(view) = &n.mysqld {
                let up = matches!(view, LocalView::Up(_));
                m.mysqld_up.get_or_create(&label).set(up as i64);
            }
        }
        m.forwarding
            .set(status.forwarding.is_some_and(|p| p.target().is_some()) as i64);
        // Every table and state written each time: a table this sidecar no longer
        // reports on (it lost the coordination) reads 0 everywhere, not its last state.
        for route in &status.routes {
            for state in RouteState::ALL {
                m.route_state
                    .get_or_create(&vec![
                        ("route_table".to_string(), route.route_table.clone()),
                        ("state".to_string(), state.name().to_string()),
                    ])
                    .set((route.state == Some(state)) as i64);
            }
        }
        if let Ok(mut s) = self.shared.status.lock() {
            *s = Some(status);
        }
    }
}

impl Observer for Telemetry {
    fn event(&self, now: Time, event: &Event) {
        let at_ms = now.as_millis();
        let fence_failure = match event {
            Event::LocalReadOnlyFailed { writable: true, .. } => Some("unfence"),
            Event::LocalReadOnlyFailed {
                writable: false, ..
            } => Some("self-fence"),
            Event::FenceFailed { .. } => Some("suspect"),
            _ => None,
        };
        if let Some(kind) = fence_failure {
            self.shared
                .metrics
                .fence_failures
                .get_or_create(&vec![("kind".to_string(), kind.to_string())])
                .inc();
        }
        match event.severity() {
            Severity::Warning => tracing::warn!(at_ms, "{event:?}"),
            Severity::Info => tracing::info!(at_ms, "{event:?}"),
            Severity::Debug => tracing::debug!(at_ms, "{event:?}"),
        }
    }

    fn wall_unix_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }

    fn after_step(&self, engine: &Engine) {
        self.update(engine.status());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use multiaz_engine::NodeId;

    /// A fence or unfence that did not work is counted, by kind, and nothing else is.
    #[test]
    fn failed_fences_are_counted_by_kind() {
        let t = Telemetry::new();
        let at = Time::from_millis(1);
        for writable in [true, false, false] {
            t.event(
                at,
                &Event::LocalReadOnlyFailed {
                    writable,
                    why: "x".into(),
                },
            );
        }
        t.event(
            at,
            &Event::FenceFailed {
                epoch: 2,
                node: NodeId(1),
                error: "x".into(),
            },
        );
        t.event(at, &Event::Unfenced);
        let text = t.metrics_text();
        for (kind, n) in [("unfence", 1), ("self-fence", 2), ("suspect", 1)] {
            let line = format!("multiaz_fence_failures_total{{kind=\"{kind}\"}} {n}");
            assert!(text.contains(&line), "{line} not in:\n{text}");
        }
    }
}
