//! The fault injector of one run: applies each of the plan's faults when it is due,
//! heals everything at the plan's heal time, and carries out the instance stops the
//! sidecars asked the EC2 API for. It remembers what is crashed, killed and held, so
//! that the heal undoes exactly that, and what the verdicts need of the faults.

use crate::scenario::{Fault, Plan, CLIENTS, DB_HOSTS};
use crate::world::{host_name, Gtid, World, EC2_HOST};
use multiaz_engine::NodeId;
use std::collections::BTreeSet;
use std::time::Duration;

pub struct Injector {
    world: World,
    pending: Vec<(Duration, Fault)>,
    heal_at: Duration,
    salvage_expected: bool,
    healed: bool,
    /// Hosts down (crashed, or stopped through the EC2 API) and not yet back.
    pub crashed: BTreeSet<NodeId>,
    killed: BTreeSet<NodeId>,
    held: BTreeSet<(String, String)>,
    /// The binlog of the mysqld killed last, when the scenario expects it salvaged.
    pub binlog_at_kill: Vec<Gtid>,
    /// Each fault and heal, as it happened.
    pub timeline: Vec<(Duration, String)>,
}

impl Injector {
    pub fn new(world: World, plan: &Plan) -> Injector {
        Injector {
            world,
            pending: plan.faults.clone(),
            heal_at: plan.heal_at,
            salvage_expected: plan.salvage_expected,
            healed: false,
            crashed: BTreeSet::new(),
            killed: BTreeSet::new(),
            held: BTreeSet::new(),
            binlog_at_kill: Vec::new(),
            timeline: Vec::new(),
        }
    }

    /// Everything due at `now`, in this order: the plan's faults, the heal, the
    /// instance stops asked for.
    pub fn before_step(&mut self, sim: &mut turmoil::Sim<'_>, now: Duration) {
        let (due, later): (Vec<_>, Vec<_>) = self.pending.drain(..).partition(|(t, _)| *t <= now);
        self.pending = later;
        for (_, f) in due {
            self.timeline.push((now, format!("FAULT {f}")));
            self.inject(sim, now, &f);
        }
        if !self.healed && now >= self.heal_at {
            self.heal(sim, now);
        }
        // Instances the EC2 API was asked to stop (STONITH).
        for n in self.world.with(|w| std::mem::take(&mut w.stop_requests)) {
            self.timeline
                .push((now, format!("EC2 stops the instance of {n}")));
            self.crash(sim, n, now);
        }
    }

    fn inject(&mut self, sim: &mut turmoil::Sim<'_>, now: Duration, f: &Fault) {
        let world = &self.world;
        match f {
            Fault::KillMysqld(n) => {
                if self.salvage_expected {
                    self.binlog_at_kill =
                        world.mysqld(*n, |m| m.binlog.iter().map(|t| t.gtid).collect());
                }
                world.mysqld(*n, |m| m.kill());
                world.changed.notify_waiters();
                self.killed.insert(*n);
            }
            Fault::StartMysqld(n) => {
                world.mysqld(*n, |m| m.start());
                self.killed.remove(n);
            }
            Fault::CrashHost(n) => self.crash(sim, *n, now),
            Fault::BounceHost(n) => {
                sim.bounce(host_name(*n));
                self.crashed.remove(n);
            }
            Fault::Partition(a, b) => {
                for x in a {
                    for y in b {
                        sim.partition(x.as_str(), y.as_str());
                    }
                }
            }
            Fault::PartitionOneway(a, b) => {
                for x in a {
                    for y in b {
                        sim.partition_oneway(x.as_str(), y.as_str());
                    }
                }
            }
            Fault::Hold(a, b) => {
                sim.hold(a.as_str(), b.as_str());
                self.held.insert((a.clone(), b.clone()));
            }
            Fault::Release(a, b) => {
                sim.release(a.as_str(), b.as_str());
                self.held.remove(&(a.clone(), b.clone()));
            }
            Fault::RepairAll => {
                repair_all(sim);
                world.with(|w| w.peers_cut.clear());
            }
            Fault::CutPeers(n) => world.with(|w| {
                w.peers_cut.insert(*n);
            }),
            Fault::ApiThrottle(r) => world.with(|w| w.ec2.set_others(*r, now)),
            Fault::ApiOutage(on) => world.with(|w| w.ec2.outage = *on),
            Fault::Operator(n, req) => world.with(|w| w.operator.push((*n, *req))),
        }
    }

    /// Network repaired, hosts and mysqlds restarted, the EC2 API normal.
    fn heal(&mut self, sim: &mut turmoil::Sim<'_>, now: Duration) {
        self.healed = true;
        self.timeline.push((
            now,
            "HEAL network repaired, hosts and mysqlds restarted, EC2 API normal".into(),
        ));
        repair_all(sim);
        self.world.with(|w| w.peers_cut.clear());
        for (a, b) in std::mem::take(&mut self.held) {
            sim.release(a.as_str(), b.as_str());
        }
        self.world.with(|w| {
            w.ec2.set_others(0.0, now);
            w.ec2.outage = false;
        });
        for n in std::mem::take(&mut self.crashed) {
            sim.bounce(host_name(n));
        }
        for n in std::mem::take(&mut self.killed) {
            self.world.mysqld(n, |m| m.start());
        }
    }

    /// A host crash: the server loses what was not on disk (its settings say what).
    fn crash(&mut self, sim: &mut turmoil::Sim<'_>, n: NodeId, now: Duration) {
        let lost = self.world.mysqld(n, |m| m.crash());
        if !lost.is_empty() {
            self.timeline.push((
                now,
                format!(
                    "{n} lost {} unsynced transaction(s) in the crash ({} .. {})",
                    lost.len(),
                    lost[0].gtid,
                    lost[lost.len() - 1].gtid
                ),
            ));
        }
        sim.crash(host_name(n));
        self.crashed.insert(n);
    }
}

fn repair_all(sim: &mut turmoil::Sim<'_>) {
    let mut hosts: Vec<String> = DB_HOSTS
        .iter()
        .chain(CLIENTS.iter())
        .map(|s| s.to_string())
        .collect();
    hosts.push(EC2_HOST.into());
    for a in &hosts {
        for b in &hosts {
            if a != b {
                sim.repair_oneway(a.as_str(), b.as_str());
            }
        }
    }
}
