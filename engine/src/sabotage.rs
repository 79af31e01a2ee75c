//! Negative controls: one safety mechanism switched off at a time, so that the
//! simulation can show that the invariant which exists for it fires. The names are
//! always defined (the simulation's command line lists them); switching one on needs
//! the `sabotage` feature, which the `multiaz` binary is never built with — without it
//! [`crate::Engine::sabotaged`] is a constant `false`.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Sabotage {
    /// Promote without waiting out an unconfirmed old master's write lease.
    LeaseWait,
    /// A master that lost its lease (or is no longer the writer) stays writable.
    SelfFence,
    /// Count the suspects as fenced without making them read_only.
    FenceBeforePromote,
    /// Skip reading the old master's binlog tail.
    Salvage,
    /// Promote a candidate that lacks what another replica received, as it is.
    CatchUp,
    /// Repoint a returning server without checking for errant transactions.
    ErrantCheck,
    /// Make a server writable without turning semi-sync source on (the adapter's part:
    /// the simulation's model mysqld carries it out).
    SemiSyncOnWritable,
    /// Move the VIP to a committed candidate before it holds everything (relay log
    /// applied, salvage done).
    VipEarly,
    /// Act on a failover's decisions (it begins; its candidate) as soon as they are
    /// proposed, as if raft had committed them (so the candidate is promoted without
    /// its own write lease too: only sidecars that applied the commit grant it one, a
    /// second guard of the same rule).
    ActBeforeCommit,
    /// Forward the VIP's traffic to a failover's candidate as soon as it is chosen,
    /// before it holds everything (the forwarding's share of `VipEarly`).
    ForwardEarly,
}

impl Sabotage {
    pub const ALL: [Sabotage; 10] = [
        Sabotage::LeaseWait,
        Sabotage::SelfFence,
        Sabotage::FenceBeforePromote,
        Sabotage::Salvage,
        Sabotage::CatchUp,
        Sabotage::ErrantCheck,
        Sabotage::SemiSyncOnWritable,
        Sabotage::VipEarly,
        Sabotage::ActBeforeCommit,
        Sabotage::ForwardEarly,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Sabotage::LeaseWait => "lease-wait",
            Sabotage::SelfFence => "self-fence",
            Sabotage::FenceBeforePromote => "fence-before-promote",
            Sabotage::Salvage => "salvage",
            Sabotage::CatchUp => "catch-up",
            Sabotage::ErrantCheck => "errant-check",
            Sabotage::SemiSyncOnWritable => "semi-sync-on-writable",
            Sabotage::VipEarly => "vip-early",
            Sabotage::ActBeforeCommit => "act-before-commit",
            Sabotage::ForwardEarly => "forward-early",
        }
    }

    pub fn parse(name: &str) -> Option<Sabotage> {
        Sabotage::ALL.into_iter().find(|s| s.name() == name)
    }
}
