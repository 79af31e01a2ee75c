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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::test_cluster::{spec, spec_with, N1, N2, N3};
    use crate::gtid::Flavour;

    fn pos(received: &str, executed: &str) -> Positions {
        Positions {
            received: GtidSet::parse(Flavour::Mariadb, received).unwrap(),
            executed: GtidSet::parse(Flavour::Mariadb, executed).unwrap(),
        }
    }

    #[test]
    fn choice_takes_the_most_advanced_received_set() {
        let positions = BTreeMap::from([
            (N2, pos("0-1-90", "0-1-80")),
            (N3, pos("0-1-100", "0-1-70")),
        ]);
        let c = choose(&spec(), &positions, &BTreeSet::from([N1])).unwrap();
        assert_eq!((c.candidate, c.catch_up_from), (N3, None));
        assert_eq!(c.target.to_string(), "0-1-100");
    }

    #[test]
    fn choice_honours_prefer_never_and_exclusions() {
        let s = spec_with([
            PromotionRule::Neutral,
            PromotionRule::Prefer,
            PromotionRule::Neutral,
        ]);
        let positions = BTreeMap::from([
            (N2, pos("0-1-90", "0-1-90")),
            (N3, pos("0-1-100", "0-1-100")),
        ]);
        let c = choose(&s, &positions, &BTreeSet::new()).unwrap();
        assert_eq!((c.candidate, c.catch_up_from), (N2, Some(N3)));
        let c = choose(&s, &positions, &BTreeSet::from([N2])).unwrap();
        assert_eq!(c.candidate, N3);
        let s = spec_with([
            PromotionRule::Neutral,
            PromotionRule::Never,
            PromotionRule::Neutral,
        ]);
        let only_n2 = BTreeMap::from([(N2, pos("0-1-90", "0-1-90"))]);
        let e = choose(&s, &only_n2, &BTreeSet::new()).unwrap_err();
        assert!(e.contains("may be promoted"), "{e}");
        assert!(choose(&s, &BTreeMap::new(), &BTreeSet::new()).is_err());
    }

    #[test]
    fn diverged_replicas_pick_the_one_with_most_transactions() {
        let positions = BTreeMap::from([
            (N2, pos("0-2-50", "0-2-50")),
            (N3, pos("0-1-40,1-1-30", "0-1-40")),
        ]);
        assert!(most_advanced(&positions).unwrap().0 == N3);
    }
}
