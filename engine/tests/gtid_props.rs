//! Properties of GTID sets, both flavours.

use multiaz_engine::gtid::{Intervals, MariadbGtidSet, MysqlGtidSet, Tag, Uuid};
use multiaz_engine::{Flavour, GtidSet};
use proptest::prelude::*;
use std::cmp::Ordering;
use std::collections::BTreeSet;

fn intervals() -> impl Strategy<Value = Vec<(u64, u64)>> {
    prop::collection::vec((1u64..60, 0u64..15).prop_map(|(a, len)| (a, a + len)), 0..5)
}

fn mysql_set() -> impl Strategy<Value = GtidSet> {
    // A small pool of UUIDs and tags (MySQL 8.3+; untagged most often) so that sets
    // overlap often, and the same numbers under another tag are other transactions.
    let tags = ["", "", "alpha", "b_2"];
    prop::collection::vec((0u8..4, 0usize..4, intervals()), 0..4).prop_map(move |parts| {
        let mut s = MysqlGtidSet::default();
        for (u, t, ivs) in parts {
            let uuid = Uuid([u.wrapping_mul(37).wrapping_add(1); 16]);
            let tag = match tags[t] {
                "" => Tag::UNTAGGED,
                name => Tag::parse(name).unwrap(),
            };
            for (a, b) in ivs {
                s.insert_tagged(uuid, tag, a, b);
            }
        }
        GtidSet::Mysql(s)
    })
}

fn mariadb_set() -> impl Strategy<Value = GtidSet> {
    prop::collection::vec((0u32..3, 1u32..4, intervals(), any::<bool>()), 0..4).prop_map(|parts| {
        let mut s = MariadbGtidSet::default();
        for (dom, server, ivs, as_prefix) in parts {
            if as_prefix {
                // A real position: everything up to n.
                let n = ivs.iter().map(|i| i.1).max().unwrap_or(0);
                s.insert(dom, server, 1, n);
            } else {
                for (a, b) in ivs {
                    s.insert(dom, server, a, b);
                }
            }
        }
        GtidSet::Mariadb(s)
    })
}

fn either() -> impl Strategy<Value = (GtidSet, GtidSet, GtidSet)> {
    prop_oneof![
        (mysql_set(), mysql_set(), mysql_set()),
        (mariadb_set(), mariadb_set(), mariadb_set()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn display_round_trips((a, _, _) in either()) {
        let text = a.to_string();
        let back = GtidSet::parse(a.flavour(), &text).unwrap();
        prop_assert_eq!(&back, &a);
        prop_assert_eq!(back.to_string(), text);
        if !a.is_empty() {
            prop_assert_eq!(GtidSet::parse_any(&a.to_string()).unwrap(), a);
        }
    }

    #[test]
    fn serde_round_trips((a, _, _) in either()) {
        let json = serde_json::to_string(&a).unwrap();
        let back: GtidSet = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(back, a);
    }

    #[test]
    fn union_is_an_upper_bound_commutative_and_associative((a, b, c) in either()) {
        let ab = a.union(&b).unwrap();
        prop_assert!(ab.contains(&a) && ab.contains(&b));
        prop_assert_eq!(&ab, &b.union(&a).unwrap());
        prop_assert_eq!(ab.union(&c).unwrap(), a.union(&b.union(&c).unwrap()).unwrap());
        prop_assert_eq!(a.union(&a).unwrap(), a.clone());
        // Counting: |a ∪ b| = |a| + |b \ a| for sets of distinct transactions. A MariaDB
        // difference also counts diverged sequence numbers (the same number written by
        // another server), which the union holds once.
        match a.flavour() {
            Flavour::Mysql => prop_assert_eq!(ab.count(), a.count() + b.difference(&a).count()),
            Flavour::Mariadb => prop_assert!(ab.count() <= a.count() + b.difference(&a).count()),
        }
    }

    #[test]
    fn difference_laws((a, b, _) in either()) {
        let d = a.difference(&b);
        prop_assert!(a.contains(&d));
        // Nothing of b is left in a \ b.
        prop_assert_eq!(d.difference(&b), d.clone());
        // MariaDB knows only each server's last write, not which numbers it wrote, so
        // its difference is an upper bound: it may name more numbers, never fewer.
        match a.flavour() {
            Flavour::Mysql => prop_assert_eq!(d.count(), a.count() - a.difference(&d).count()),
            Flavour::Mariadb => prop_assert!(a.difference(&d).count() >= a.count() - d.count()),
        }
        // (a \ b) ∪ b ⊇ a, and a ⊇ b exactly when b \ a is empty.
        prop_assert!(d.union(&b).unwrap().contains(&a));
        // Nothing missing means contained; a MariaDB set can contain another by
        // sequence number and still hold diverged transactions.
        if b.difference(&a).is_empty() {
            prop_assert!(a.contains(&b));
        }
        if a.flavour() == Flavour::Mysql {
            prop_assert_eq!(a.contains(&b), b.difference(&a).is_empty());
        }
        prop_assert!(a.difference(&a).is_empty());
    }

    #[test]
    fn ordering_is_consistent_with_containment((a, b, c) in either()) {
        prop_assert_eq!(a.compare(&a), Some(Ordering::Equal));
        prop_assert_eq!(a.compare(&b), b.compare(&a).map(Ordering::reverse));
        prop_assert_eq!(a.is_more_advanced_than(&b), a.contains(&b) && !b.contains(&a));
        prop_assert!(!(a.is_more_advanced_than(&b) && b.is_more_advanced_than(&a)));
        if a.contains(&b) && b.contains(&c) {
            prop_assert!(a.contains(&c));
        }
        if a.compare(&b) == Some(Ordering::Equal) {
            prop_assert_eq!(a.count(), b.count());
        }
        if a.is_more_advanced_than(&b) {
            prop_assert!(a.count() > b.count());
        }
    }

    #[test]
    fn intervals_match_a_reference_set(
        xs in prop::collection::vec((1u64..80, 0u64..10), 0..8),
        ys in prop::collection::vec((1u64..80, 0u64..10), 0..8),
        probe in 0u64..100,
    ) {
        let build = |v: &[(u64, u64)]| {
            let mut i = Intervals::new();
            let mut r = BTreeSet::new();
            for &(a, len) in v {
                i.insert(a, a + len);
                r.extend(a..=a + len);
            }
            (i, r)
        };
        let (a, ra) = build(&xs);
        let (b, rb) = build(&ys);
        let members = |i: &Intervals| -> BTreeSet<u64> { i.runs().iter().flat_map(|&(s, e)| s..=e).collect() };
        prop_assert_eq!(members(&a.union(&b)), ra.union(&rb).copied().collect::<BTreeSet<_>>());
        prop_assert_eq!(members(&a.difference(&b)), ra.difference(&rb).copied().collect::<BTreeSet<_>>());
        prop_assert_eq!(members(&a.intersection(&b)), ra.intersection(&rb).copied().collect::<BTreeSet<_>>());
        prop_assert_eq!(a.contains(probe), ra.contains(&probe));
        prop_assert_eq!(a.count(), ra.len() as u64);
        prop_assert_eq!(a.is_superset(&b), rb.is_subset(&ra));
        // Canonical: runs sorted, disjoint and not adjacent.
        for w in a.runs().windows(2) {
            prop_assert!(w[0].1 + 1 < w[1].0);
        }
    }

    #[test]
    fn mariadb_positions_compare_per_domain_by_sequence(
        d in 0u32..4, s1 in 1u32..5, s2 in 1u32..5, n1 in 0u64..1000, n2 in 0u64..1000,
    ) {
        let a = GtidSet::parse(Flavour::Mariadb, &format!("{d}-{s1}-{n1}")).unwrap();
        let b = GtidSet::parse(Flavour::Mariadb, &format!("{d}-{s2}-{n2}")).unwrap();
        prop_assert_eq!(a.contains(&b), n1 >= n2);
        prop_assert_eq!(a.is_more_advanced_than(&b), n1 > n2);
        // As binlog states: a server b never saw wrote all of a's transactions.
        let expected = if s1 == s2 { n1.saturating_sub(n2) } else { n1 };
        prop_assert_eq!(a.difference(&b).count(), expected);
    }

    #[test]
    fn parsing_arbitrary_text_never_panics(text in ".{0,80}") {
        let _ = GtidSet::parse(Flavour::Mysql, &text);
        let _ = GtidSet::parse(Flavour::Mariadb, &text);
        let _ = GtidSet::parse_any(&text);
    }

    #[test]
    fn parsing_near_miss_text_never_panics(text in "[0-9a-fA-F:,\\- ]{0,60}") {
        let _ = GtidSet::parse(Flavour::Mysql, &text);
        let _ = GtidSet::parse(Flavour::Mariadb, &text);
        let _ = GtidSet::parse_any(&text);
    }
}

#[test]
fn huge_numbers_are_errors_not_panics() {
    assert!(GtidSet::parse(Flavour::Mariadb, "0-1-99999999999999999999999").is_err());
    assert!(GtidSet::parse(Flavour::Mariadb, "4294967296-1-1").is_err());
    assert!(GtidSet::parse(
        Flavour::Mysql,
        "3E11FA47-71CA-11E1-9E33-C80AA9429562:1-18446744073709551616"
    )
    .is_err());
    let max = GtidSet::parse(
        Flavour::Mysql,
        "3E11FA47-71CA-11E1-9E33-C80AA9429562:1-18446744073709551615",
    )
    .unwrap();
    assert_eq!(max.count(), u64::MAX);
}

#[test]
fn a_diverged_mariadb_server_shows_errant_transactions() {
    // The old master wrote 436 and 437 that nobody received; the new master (server 2)
    // has since written its own 436..900.
    let old_master = GtidSet::parse(Flavour::Mariadb, "0-1-437").unwrap();
    let new_master = GtidSet::parse(Flavour::Mariadb, "0-1-435,0-2-900").unwrap();
    assert!(
        new_master.contains(&old_master),
        "by sequence number it looks behind"
    );
    let errant = old_master.difference(&new_master);
    assert_eq!(errant.to_string(), "0-1:436-437");
    // A replica that simply lags has nothing errant.
    let lagging = GtidSet::parse(Flavour::Mariadb, "0-1-435,0-2-700").unwrap();
    assert!(lagging.difference(&new_master).is_empty());
    // gtid_binlog_state round-trips.
    assert_eq!(new_master.to_string(), "0-1-435,0-2-900");
    assert_eq!(
        GtidSet::parse(Flavour::Mariadb, &errant.to_string()).unwrap(),
        errant
    );
}

#[test]
fn tagged_gtids_are_their_own_transactions_printed_as_mysql_prints_them() {
    let u = "3e11fa47-71ca-11e1-9e33-c80aa9429562";
    let s = GtidSet::parse(Flavour::Mysql, &format!("{u}:1-5:TagA:1-3:tagb:7")).unwrap();
    assert_eq!(s.to_string(), format!("{u}:1-5:taga:1-3:tagb:7"));
    let GtidSet::Mysql(m) = &s else { panic!() };
    let uuid = Uuid::parse(u).unwrap();
    let taga = Tag::parse("taga").unwrap();
    assert!(m.contains_tagged(&uuid, &taga, 2));
    assert!(!m.contains_tagged(&uuid, &taga, 4), "4 is untagged only");
    assert!(m.contains_gtid(&uuid, 4));
    // A tagged transaction is not in a set of the same numbers untagged.
    let plain = GtidSet::parse(Flavour::Mysql, &format!("{u}:1-100")).unwrap();
    let one_tagged = GtidSet::parse(Flavour::Mysql, &format!("{u}:taga:1")).unwrap();
    assert!(!plain.contains(&one_tagged));
    assert_eq!(one_tagged.difference(&plain), one_tagged);
    assert_eq!(
        plain.union(&one_tagged).unwrap().to_string(),
        format!("{u}:1-100:taga:1")
    );
}
