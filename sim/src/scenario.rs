//! Scenarios and the fault plan each seed draws.

use crate::hostile::Hostility;
use multiaz_engine::{NodeId, OperatorRequest};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use std::fmt;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// SIGKILL of the master's mysqld; its host and sidecar live on.
    MasterKill,
    /// The master's whole host crashes.
    HostCrash,
    /// The master's AZ (its database host and its clients) is cut off.
    AzPartition,
    /// The master's mysqld dies while other clusters in the account fail over too: they
    /// emptied the account's EC2 token buckets and take half their refill.
    ApiThrottle,
    /// The master's mysqld dies while the EC2 API is down for 30 s.
    ApiOutage,
    /// The master's AZ is cut off while the EC2 API is down for 30 s: nothing the old
    /// master's host forwards reaches the other AZs (in the route mode their clients
    /// wait for the API; anchored, their own AZ's host forwards to the new master).
    #[value(name = "api-outage+az-partition")]
    #[serde(rename = "api-outage+az-partition")]
    ApiOutagePartition,
    /// Faults drawn from the seed.
    Mixed,
    /// A planned switchover to a replica drawn from the seed, asked of a sidecar drawn
    /// from the seed, while the clients write.
    Switchover,
    /// The master fails over and comes back 15 s later: clean (its mysqld was killed,
    /// its tail salvaged) or with errant transactions (its host crashed with a tail no
    /// replica had), drawn from the seed.
    Rejoin,
    /// Failover paused by an operator; the master's mysqld is killed and starts again
    /// with its configured settings (semi-sync source off, as on a replica), stays
    /// master, and is cut off from its replicas for a while: no write may be
    /// acknowledged that no replica has.
    PausedRestart,
    /// db3 is the preferred next master, but the master's link to db3 is cut before
    /// the master's host crashes (nothing to salvage): db3 must catch up from db2 first.
    CatchUp,
    /// The master's mysqld dies just as its sidecar (the coordinator) loses every
    /// peer, while MySQL and the EC2 API stay reachable from it (the peer port
    /// firewalled or flooded): the failover it begins cannot be committed, and must not
    /// be acted on; the other two sidecars fail over.
    PeerCut,
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Scenario::MasterKill => "master-kill",
            Scenario::HostCrash => "host-crash",
            Scenario::AzPartition => "az-partition",
            Scenario::ApiThrottle => "api-throttle",
            Scenario::ApiOutage => "api-outage",
            Scenario::ApiOutagePartition => "api-outage+az-partition",
            Scenario::Mixed => "mixed",
            Scenario::Switchover => "switchover",
            Scenario::Rejoin => "rejoin",
            Scenario::PausedRestart => "paused-restart",
            Scenario::CatchUp => "catch-up",
            Scenario::PeerCut => "peer-cut",
        };
        f.write_str(s)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    KillMysqld(NodeId),
    StartMysqld(NodeId),
    CrashHost(NodeId),
    BounceHost(NodeId),
    /// Cut every link between the two groups of host names, both ways.
    Partition(Vec<String>, Vec<String>),
    /// Cut the links from the first group to the second only.
    PartitionOneway(Vec<String>, Vec<String>),
    /// Hold messages between two hosts (a clogged link) until released.
    Hold(String, String),
    Release(String, String),
    RepairAll,
    ApiThrottle(f64),
    ApiOutage(bool),
    /// An operator's request to one sidecar's admin API.
    Operator(NodeId, OperatorRequest),
    /// Drop every peer message to and from this node's sidecar (MySQL and EC2 traffic
    /// still flow); healed by RepairAll.
    CutPeers(NodeId),
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::KillMysqld(n) => write!(f, "kill -9 mysqld on {n}"),
            Fault::StartMysqld(n) => write!(f, "mysqld on {n} starts again"),
            Fault::CrashHost(n) => write!(f, "host {n} crashes"),
            Fault::BounceHost(n) => write!(f, "host {n} boots again"),
            Fault::Partition(a, b) => write!(f, "partition {a:?} | {b:?}"),
            Fault::PartitionOneway(a, b) => write!(f, "one-way partition {a:?} -> {b:?}"),
            Fault::Hold(a, b) => write!(f, "clog link {a} <-> {b}"),
            Fault::Release(a, b) => write!(f, "release link {a} <-> {b}"),
            Fault::RepairAll => write!(f, "network healed"),
            Fault::ApiThrottle(r) => write!(
                f,
                "other clusters in the account take {:.0}% of the EC2 mutating-call refill",
                r * 100.0
            ),
            Fault::ApiOutage(true) => write!(f, "EC2 API down"),
            Fault::ApiOutage(false) => write!(f, "EC2 API back"),
            Fault::Operator(n, OperatorRequest::Switchover { to }) => {
                write!(f, "operator asks {n}'s sidecar for a switchover to {to}")
            }
            Fault::Operator(n, r) => write!(f, "operator asks {n}'s sidecar: {r:?}"),
            Fault::CutPeers(n) => write!(f, "{n}'s sidecar loses every peer"),
        }
    }
}

pub struct Plan {
    pub faults: Vec<(Duration, Fault)>,
    /// One line describing the draw (swarm testing: each run prints its profile).
    pub profile: String,
    /// When the first fault hits.
    pub fault_at: Duration,
    /// Everything is healed from here on; liveness is judged after it.
    pub heal_at: Duration,
    /// A master whose host survives is killed: every binlog event must survive too.
    pub salvage_expected: bool,
    /// The switchover's target (scenario `switchover`).
    pub switchover_to: Option<NodeId>,
    /// The servers' settings and the EC2 data plane's lag.
    pub hostility: Hostility,
}

pub const DB_HOSTS: [&str; 3] = ["db1", "db2", "db3"];
pub const CLIENTS: [&str; 3] = ["client-a", "client-b", "client-c"];

fn az_group(i: usize) -> Vec<String> {
    vec![DB_HOSTS[i].to_string(), CLIENTS[i].to_string()]
}

fn others(i: usize) -> Vec<String> {
    let mut v: Vec<String> = (0..3).filter(|j| *j != i).flat_map(az_group).collect();
    v.push("ec2".into());
    v
}

fn s(secs: f64) -> Duration {
    Duration::from_secs_f64(secs)
}

fn db_ids() -> impl Iterator<Item = NodeId> {
    (1..=DB_HOSTS.len() as u64).map(NodeId)
}

/// The initial master's links to both replicas drop what it sends.
fn master_cut_off() -> Fault {
    Fault::PartitionOneway(
        vec![DB_HOSTS[0].into()],
        vec![DB_HOSTS[1].into(), DB_HOSTS[2].into()],
    )
}

/// The master's last transactions reach no replica (the link from it drops them),
/// then `fault` hits: they are in its binlog only.
fn cut_off_then(at: Duration, fault: Fault) -> Vec<(Duration, Fault)> {
    vec![
        (at - s(0.3), master_cut_off()),
        (at, fault),
        (at + s(0.01), Fault::RepairAll),
    ]
}

impl Plan {
    pub fn draw(scenario: Scenario, seed: u64) -> Plan {
        let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0xfa17);
        let master = NodeId(1);
        // The fault lands at a seed-drawn moment so that it hits every phase of the
        // probe and lease cycles.
        let at = s(10.0 + rng.random::<f64>() * 2.0);
        let heal = s(60.0);
        // Before mysqld dies, its last transactions reach no replica (the link drops
        // them), so they are in its binlog only: salvage must bring them back.
        let unreplicated_tail = |at: Duration| cut_off_then(at, Fault::KillMysqld(master));
        let (faults, salvage_expected) = match scenario {
            Scenario::MasterKill => (unreplicated_tail(at), true),
            Scenario::HostCrash => (vec![(at, Fault::CrashHost(master))], false),
            Scenario::AzPartition => (vec![(at, Fault::Partition(az_group(0), others(0)))], false),
            Scenario::ApiThrottle => {
                let mut f = unreplicated_tail(at);
                f.push((at, Fault::ApiThrottle(0.5)));
                f.push((at + s(40.0), Fault::ApiThrottle(0.0)));
                (f, true)
            }
            Scenario::ApiOutage => {
                let mut f = unreplicated_tail(at);
                f.push((at, Fault::ApiOutage(true)));
                f.push((at + s(30.0), Fault::ApiOutage(false)));
                (f, true)
            }
            Scenario::ApiOutagePartition => (
                vec![
                    (at, Fault::Partition(az_group(0), others(0))),
                    (at, Fault::ApiOutage(true)),
                    (at + s(30.0), Fault::ApiOutage(false)),
                ],
                false,
            ),
            Scenario::Mixed => return Self::draw_mixed(&mut rng, seed, at, heal),
            Scenario::Switchover => {
                let to = NodeId(2 + rng.random_range(0..2u64));
                let asked = NodeId(1 + rng.random_range(0..3u64));
                let f = vec![(
                    at,
                    Fault::Operator(asked, OperatorRequest::Switchover { to }),
                )];
                let mut plan = Self::finish(f, at, heal, false);
                plan.switchover_to = Some(to);
                return plan;
            }
            Scenario::PausedRestart => {
                let asked = NodeId(1 + rng.random_range(0..3u64));
                let cut = at + s(5.0 + rng.random::<f64>() * 2.0);
                let f = vec![
                    (at - s(2.0), Fault::Operator(asked, OperatorRequest::Pause)),
                    (at, Fault::KillMysqld(master)),
                    (
                        at + s(1.0 + rng.random::<f64>()),
                        Fault::StartMysqld(master),
                    ),
                    (cut, master_cut_off()),
                    (cut + s(5.0), Fault::RepairAll),
                    (
                        cut + s(6.0),
                        Fault::Operator(asked, OperatorRequest::Resume),
                    ),
                ];
                (f, false)
            }
            Scenario::CatchUp => {
                let cut = at - s(2.0 + rng.random::<f64>() * 2.0);
                let f = vec![
                    (
                        cut,
                        Fault::Partition(vec![DB_HOSTS[0].into()], vec![DB_HOSTS[2].into()]),
                    ),
                    (at, Fault::CrashHost(master)),
                    (at + s(0.01), Fault::RepairAll),
                ];
                (f, false)
            }
            Scenario::PeerCut => {
                // The cut lands up to half a second before the kill: the sidecar is
                // still the coordinator (it steps down once it has heard no peer for
                // its election timeout) when it sees its mysqld die.
                let cut = at - s(rng.random::<f64>() * 0.5);
                let f = vec![
                    (cut, Fault::CutPeers(master)),
                    (at, Fault::KillMysqld(master)),
                    (at + s(20.0), Fault::RepairAll),
                ];
                (f, false)
            }
            Scenario::Rejoin => {
                let back = at + s(15.0);
                if rng.random::<bool>() {
                    let mut f = unreplicated_tail(at);
                    f.push((back, Fault::StartMysqld(master)));
                    (f, true)
                } else {
                    // The tail stays on the crashed host: errant when it is back.
                    let mut f = cut_off_then(at, Fault::CrashHost(master));
                    f.push((back, Fault::BounceHost(master)));
                    (f, false)
                }
            }
        };
        Self::finish(faults, at, heal, salvage_expected)
    }

    fn finish(
        mut faults: Vec<(Duration, Fault)>,
        at: Duration,
        heal: Duration,
        salvage_expected: bool,
    ) -> Plan {
        faults.sort_by_key(|f| f.0);
        let profile = faults
            .iter()
            .map(|(t, f)| format!("{:.1}s {f}", t.as_secs_f64()))
            .collect::<Vec<_>>()
            .join("; ");
        Plan {
            faults,
            profile,
            fault_at: at,
            heal_at: heal,
            salvage_expected,
            switchover_to: None,
            hostility: Hostility::baseline(db_ids()),
        }
    }

    fn draw_mixed(rng: &mut ChaCha8Rng, seed: u64, at: Duration, heal: Duration) -> Plan {
        // Drawn apart from the faults (a stream of its own): the same seed keeps its
        // fault plan whatever is added here.
        let mut hostile = ChaCha8Rng::seed_from_u64(seed ^ 0x0c07_0ff0);
        let cut_off_kill = hostile.random::<f64>() < 0.3;
        let mut faults = Vec::new();
        let count = 1 + rng.random_range(0..3);
        let mut host_faults = 0;
        let mut net_faults = false;
        let mut killed_master = false;
        for k in 0..count {
            let t = if k == 0 {
                at
            } else {
                at + s(rng.random::<f64>() * 25.0)
            };
            let node = NodeId(1 + rng.random_range(0..3u64));
            let i = (node.0 - 1) as usize;
            match rng.random_range(0..7) {
                0 | 1 => {
                    // At most one database host is lost at a time, as a 3-node cluster
                    // tolerates; a second loss is covered by the heal phase.
                    if host_faults == 0 {
                        host_faults += 1;
                        faults.push((t, Fault::KillMysqld(node)));
                        killed_master |= node == NodeId(1) && k == 0;
                    }
                }
                2 => {
                    if host_faults == 0 {
                        host_faults += 1;
                        faults.push((t, Fault::CrashHost(node)));
                    }
                }
                3 => {
                    net_faults = true;
                    faults.push((t, Fault::Partition(az_group(i), others(i))));
                    faults.push((t + s(5.0 + rng.random::<f64>() * 20.0), Fault::RepairAll));
                }
                4 => {
                    net_faults = true;
                    let (a, b) = if rng.random::<bool>() {
                        (az_group(i), others(i))
                    } else {
                        (others(i), az_group(i))
                    };
                    faults.push((t, Fault::PartitionOneway(a, b)));
                    faults.push((t + s(5.0 + rng.random::<f64>() * 20.0), Fault::RepairAll));
                }
                5 => {
                    net_faults = true;
                    let j = (i + 1 + rng.random_range(0..2)) % 3;
                    let (a, b) = (DB_HOSTS[i].to_string(), DB_HOSTS[j].to_string());
                    faults.push((t, Fault::Hold(a.clone(), b.clone())));
                    faults.push((
                        t + s(1.0 + rng.random::<f64>() * 10.0),
                        Fault::Release(a, b),
                    ));
                }
                _ => {
                    if rng.random::<bool>() {
                        faults.push((t, Fault::ApiThrottle(0.2 + rng.random::<f64>() * 0.6)));
                        faults.push((
                            t + s(5.0 + rng.random::<f64>() * 30.0),
                            Fault::ApiThrottle(0.0),
                        ));
                    } else {
                        faults.push((t, Fault::ApiOutage(true)));
                        faults.push((
                            t + s(5.0 + rng.random::<f64>() * 25.0),
                            Fault::ApiOutage(false),
                        ));
                    }
                }
            }
        }
        if cut_off_kill {
            // A third of the seeds begin with the master's last transactions cut off
            // from every replica, then its mysqld killed: its binlog tail is on its
            // host only, and salvage must bring every event back.
            faults.retain(|(t, _)| *t != at);
            faults.extend(cut_off_then(at, Fault::KillMysqld(NodeId(1))));
            killed_master = true;
        }
        let host_lost = faults
            .iter()
            .any(|(_, f)| matches!(f, Fault::CrashHost(NodeId(1))));
        // Network faults other than the cut-off itself may keep salvage from the host.
        let net_faults = net_faults
            && faults.iter().any(|(t, f)| {
                *t != at - s(0.3)
                    && matches!(
                        f,
                        Fault::Partition(..) | Fault::PartitionOneway(..) | Fault::Hold(..)
                    )
            });
        faults.sort_by_key(|a| a.0);
        let fault_at = faults.first().map(|f| f.0).unwrap_or(at);
        let mut plan = Self::finish(
            faults,
            fault_at,
            heal,
            killed_master && !net_faults && !host_lost,
        );
        plan.hostility = Hostility::draw(seed, db_ids());
        plan
    }
}
