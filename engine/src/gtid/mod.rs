//! GTID sets for both flavours, behind one type: [`GtidSet`].
//!
//! Set operations never mix flavours silently: a MySQL set contains no MariaDB
//! transaction (so `contains` is false and `difference` keeps everything), and a union
//! of two non-empty sets of different flavours is an error. An empty set of either
//! flavour is the empty set and combines with anything.

mod intervals;
mod mariadb;
mod mysql;
mod one;

pub use intervals::Intervals;
pub use mariadb::{DomainPos, MariadbGtidSet};
pub use mysql::{MysqlGtidSet, Tag, Uuid};
pub use one::Gtid;

use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GtidError {
    #[error("bad server UUID {0:?}: expected 8-4-4-4-12 hexadecimal digits")]
    BadUuid(String),
    #[error("bad interval {interval:?} in {element:?}: {why}")]
    BadInterval {
        interval: String,
        element: String,
        why: &'static str,
    },
    #[error("{0:?} has a UUID but no transaction intervals (expected uuid:1-5)")]
    MissingIntervals(String),
    #[error("empty element in GTID set {0:?} (two commas, or a trailing comma)")]
    EmptyElement(String),
    #[error("bad GTID tag {0:?}: expected 1 to 32 of a-z, 0-9 and _, not starting with a digit")]
    BadTag(String),
    #[error("bad MariaDB GTID {element:?}: {why}")]
    BadMariadb { element: String, why: &'static str },
    #[error("cannot tell the flavour of GTID set {0:?}: neither uuid:n (MySQL) nor domain-server-seq (MariaDB)")]
    UnknownFlavour(String),
    #[error("cannot combine a MySQL GTID set with a MariaDB one")]
    FlavourMismatch,
}

/// Which server family a set (and a cluster) belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Flavour {
    Mysql,
    Mariadb,
}

impl fmt::Display for Flavour {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Flavour::Mysql => "mysql",
            Flavour::Mariadb => "mariadb",
        })
    }
}

/// A set of transactions, MySQL or MariaDB. The one type the rest of multiaz uses.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum GtidSet {
    Mysql(MysqlGtidSet),
    Mariadb(MariadbGtidSet),
}

impl fmt::Debug for GtidSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({:?})", self.flavour(), self.to_string())
    }
}

impl GtidSet {
    pub fn empty(flavour: Flavour) -> Self {
        match flavour {
            Flavour::Mysql => GtidSet::Mysql(MysqlGtidSet::default()),
            Flavour::Mariadb => GtidSet::Mariadb(MariadbGtidSet::default()),
        }
    }

    /// Parses a set of a known flavour (the empty string is the empty set).
    pub fn parse(flavour: Flavour, text: &str) -> Result<Self, GtidError> {
        Ok(match flavour {
            Flavour::Mysql => GtidSet::Mysql(MysqlGtidSet::parse(text)?),
            Flavour::Mariadb => GtidSet::Mariadb(MariadbGtidSet::parse(text)?),
        })
    }

    /// Parses a set, telling the flavour from its text (`:` after a UUID is MySQL).
    pub fn parse_any(text: &str) -> Result<Self, GtidError> {
        let first = text.split(',').next().unwrap_or("").trim();
        if first.is_empty() {
            return Err(GtidError::UnknownFlavour(text.to_string()));
        }
        if first.len() >= 36 && first.as_bytes().get(8) == Some(&b'-') {
            Self::parse(Flavour::Mysql, text)
        } else if first.bytes().next().is_some_and(|b| b.is_ascii_digit()) {
            Self::parse(Flavour::Mariadb, text)
        } else {
            Err(GtidError::UnknownFlavour(text.to_string()))
        }
    }

    pub fn flavour(&self) -> Flavour {
        match self {
            GtidSet::Mysql(_) => Flavour::Mysql,
            GtidSet::Mariadb(_) => Flavour::Mariadb,
        }
    }

    pub fn is_empty(&self) -> bool {
        match self {
            GtidSet::Mysql(s) => s.is_empty(),
            GtidSet::Mariadb(s) => s.is_empty(),
        }
    }

    /// Number of transactions in the set.
    pub fn count(&self) -> u64 {
        match self {
            GtidSet::Mysql(s) => s.count(),
            GtidSet::Mariadb(s) => s.count(),
        }
    }

    /// Every transaction of `other` is in `self`.
    pub fn contains(&self, other: &GtidSet) -> bool {
        match (self, other) {
            (GtidSet::Mysql(a), GtidSet::Mysql(b)) => a.is_superset(b),
            (GtidSet::Mariadb(a), GtidSet::Mariadb(b)) => a.is_superset(b),
            _ => other.is_empty(),
        }
    }

    pub fn union(&self, other: &GtidSet) -> Result<GtidSet, GtidError> {
        match (self, other) {
            (GtidSet::Mysql(a), GtidSet::Mysql(b)) => Ok(GtidSet::Mysql(a.union(b))),
            (GtidSet::Mariadb(a), GtidSet::Mariadb(b)) => Ok(GtidSet::Mariadb(a.union(b))),
            _ if other.is_empty() => Ok(self.clone()),
            _ if self.is_empty() => Ok(other.clone()),
            _ => Err(GtidError::FlavourMismatch),
        }
    }

    /// Transactions in `self` that `other` lacks: on a returning master, its errant set.
    pub fn difference(&self, other: &GtidSet) -> GtidSet {
        match (self, other) {
            (GtidSet::Mysql(a), GtidSet::Mysql(b)) => GtidSet::Mysql(a.difference(b)),
            (GtidSet::Mariadb(a), GtidSet::Mariadb(b)) => GtidSet::Mariadb(a.difference(b)),
            _ => self.clone(),
        }
    }

    /// Containment order: `Some(Greater)` when `self` has every transaction of `other`
    /// and more; `None` when each has something the other lacks (diverged).
    pub fn compare(&self, other: &GtidSet) -> Option<Ordering> {
        match (self.contains(other), other.contains(self)) {
            (true, true) => Some(Ordering::Equal),
            (true, false) => Some(Ordering::Greater),
            (false, true) => Some(Ordering::Less),
            (false, false) => None,
        }
    }

    /// `self` has everything `other` has, and more.
    pub fn is_more_advanced_than(&self, other: &GtidSet) -> bool {
        self.compare(other) == Some(Ordering::Greater)
    }
}

impl fmt::Display for GtidSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GtidSet::Mysql(s) => s.fmt(f),
            GtidSet::Mariadb(s) => s.fmt(f),
        }
    }
}

impl FromStr for GtidSet {
    type Err = GtidError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse_any(s)
    }
}

/// Serialized as `{"flavour": "mariadb", "set": "0-1-100"}` so that the empty set keeps
/// its flavour.
impl Serialize for GtidSet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Repr<'a> {
            flavour: Flavour,
            set: &'a str,
        }
        Repr {
            flavour: self.flavour(),
            set: &self.to_string(),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for GtidSet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Repr {
            flavour: Flavour,
            set: String,
        }
        let r = Repr::deserialize(d)?;
        GtidSet::parse(r.flavour, &r.set).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mysql_round_trip_and_merge() {
        let s = GtidSet::parse_any(
            "3E11FA47-71CA-11E1-9E33-C80AA9429562:1-5:7-9,\n3e11fa47-71ca-11e1-9e33-c80aa9429562:6",
        )
        .unwrap();
        assert_eq!(s.to_string(), "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-9");
        assert_eq!(s.count(), 9);
    }

    #[test]
    fn mariadb_position_is_a_prefix() {
        let a = GtidSet::parse(Flavour::Mariadb, "0-1-100,1-2-5").unwrap();
        let b = GtidSet::parse(Flavour::Mariadb, "0-2-98").unwrap();
        assert!(a.is_more_advanced_than(&b));
        let errant = a.difference(&b);
        // Server 1 never wrote in b's history: all of its transactions are missing there.
        assert_eq!(errant.to_string(), "0-1-100,1-2-5");
        let b_state = GtidSet::parse(Flavour::Mariadb, "0-1-98").unwrap();
        assert_eq!(a.difference(&b_state).to_string(), "0-1:99-100,1-2-5");
        assert_eq!(
            GtidSet::parse(Flavour::Mariadb, &errant.to_string()).unwrap(),
            errant
        );
    }

    #[test]
    fn errors_name_the_bad_part() {
        let e =
            GtidSet::parse(Flavour::Mysql, "3E11FA47-71CA-11E1-9E33-C80AA9429562:1-x").unwrap_err();
        assert!(e.to_string().contains("\"1-x\""), "{e}");
        let e = GtidSet::parse(Flavour::Mariadb, "0-1-100,0-x-3").unwrap_err();
        assert!(e.to_string().contains("0-x-3"), "{e}");
        let e =
            GtidSet::parse(Flavour::Mysql, "3E11FA47-71CA-11E1-9E33-C80AA9429562:5-1").unwrap_err();
        assert!(e.to_string().contains("start is after its end"), "{e}");
        let e = GtidSet::parse(Flavour::Mysql, "3E11FA47-71CA-11E1-9E33:1").unwrap_err();
        assert!(matches!(e, GtidError::BadUuid(_)), "{e}");
        let e =
            GtidSet::parse(Flavour::Mysql, "3E11FA47-71CA-11E1-9E33-C80AA9429562:tag").unwrap_err();
        assert!(matches!(e, GtidError::MissingIntervals(_)), "{e}");
        let e = GtidSet::parse(
            Flavour::Mysql,
            "3E11FA47-71CA-11E1-9E33-C80AA9429562:9tag:1",
        )
        .unwrap_err();
        assert!(e.to_string().contains("9tag"), "{e}");
        let e = GtidSet::parse(
            Flavour::Mysql,
            "3E11FA47-71CA-11E1-9E33-C80AA9429562:a_tag_longer_than_thirty_two_chars:1",
        )
        .unwrap_err();
        assert!(matches!(e, GtidError::BadTag(_)), "{e}");
        assert!(GtidSet::parse(Flavour::Mariadb, "0-1-100,,1-1-2").is_err());
        assert!(GtidSet::parse_any("hello").is_err());
    }

    #[test]
    fn flavours_do_not_mix() {
        let my = GtidSet::parse_any("3E11FA47-71CA-11E1-9E33-C80AA9429562:1").unwrap();
        let ma = GtidSet::parse_any("0-1-1").unwrap();
        assert!(!my.contains(&ma));
        assert_eq!(my.union(&ma), Err(GtidError::FlavourMismatch));
        assert_eq!(my.union(&GtidSet::empty(Flavour::Mariadb)).unwrap(), my);
        assert_eq!(my.difference(&ma), my);
    }
}
