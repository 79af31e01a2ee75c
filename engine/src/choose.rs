//! Which replica becomes master. A pure choice over the fenced replicas' positions.

use crate::cluster::{ClusterSpec, NodeId, NodeSpec, PromotionRule};
use crate::command::Positions;
use crate::gtid::GtidSet;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    pub candidate: NodeId,
    /// The candidate lacks transactions another replica received: replicate them from
    /// this one before promotion.
    pub catch_up_from: Option<NodeId>,
    /// The most advanced received set among all replicas: the new master must have it.
    pub target: GtidSet,
}

/// The replica whose received set holds every other's; if their histories diverged,
/// the one with the most transactions (lowest id on a tie).
pub fn most_advanced(positions: &BTreeMap<NodeId, Positions>) -> Option<(NodeId, &GtidSet)> {
    let holds_all = positions
        .iter()
        .find(|(_, p)| positions.values().all(|q| p.received.contains(&q.received)));
    holds_all
        .or_else(|| {
            positions
                .iter()
                .max_by(|(a, p), (b, q)| p.received.count().cmp(&q.received.count()).then(b.cmp(a)))
        })
        .map(|(id, p)| (*id, &p.received))
}

/// Chooses the new master among `positions` (replicas that answered the fence),
/// leaving out `excluded` (suspects, and candidates that already failed this epoch).
///
/// Order: promotion rule `prefer` first, then the clients' AZ, then the most
/// transactions received, then the lowest id. A candidate that is behind the most
/// advanced replica (which may itself be never-promote) is caught up from it.
pub fn choose(
    spec: &ClusterSpec,
    positions: &BTreeMap<NodeId, Positions>,
    excluded: &BTreeSet<NodeId>,
) -> Result<Choice, String> {
    let (best, target) = most_advanced(positions).ok_or("no replica answered the fence")?;
    let eligible = positions
        .iter()
        .filter(|(id, _)| !excluded.contains(id))
        .filter_map(|(id, p)| Some((id, p, spec.node(*id).filter(|n| n.may_be_promoted())?)));
    let rank = |n: &NodeSpec, p: &Positions| {
        (
            n.promotion == PromotionRule::Prefer,
            spec.client_az.as_ref() == Some(&n.az),
            p.received.count(),
        )
    };
    let (candidate, pos) = eligible
        .max_by(|(a, p, n), (b, q, m)| rank(n, p).cmp(&rank(m, q)).then(b.cmp(a)))
        .map(|(id, p, _)| (id, p))
        .ok_or_else(|| {
            let never: Vec<String> = positions.keys().map(|k| k.to_string()).collect();
            format!(
                "no replica may be promoted among those that answered ({})",
                never.join(", ")
            )
        })?;
    let catch_up_from = (!pos.received.contains(target)).then_some(best);
    Ok(Choice {
        candidate: *candidate,
        catch_up_from,
        target: target.clone(),
    })
}
