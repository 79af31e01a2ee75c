//! One transaction's GTID, either flavour: what the binlog reader finds in a GTID
//! event, what salvage replays under, and what the simulation's model servers write.

use super::{Flavour, GtidError, GtidSet, Tag, Uuid};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// One transaction's identity, as the server that wrote it named it. Ordered by
/// flavour, then by source (MariaDB: domain, server, seq; MySQL: UUID, tag, number).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Gtid {
    Mariadb {
        domain: u32,
        server: u32,
        seq: u64,
    },
    /// `tag` is MySQL 8.3+'s ([`Tag::UNTAGGED`] for a plain `uuid:n`).
    Mysql {
        uuid: Uuid,
        tag: Tag,
        gno: u64,
    },
}

impl Gtid {
    /// An untagged MySQL GTID, `uuid:gno`.
    pub fn mysql(uuid: Uuid, gno: u64) -> Gtid {
        Gtid::Mysql {
            uuid,
            tag: Tag::UNTAGGED,
            gno,
        }
    }

    pub fn flavour(&self) -> Flavour {
        match self {
            Gtid::Mariadb { .. } => Flavour::Mariadb,
            Gtid::Mysql { .. } => Flavour::Mysql,
        }
    }

    /// Whether `set` holds this transaction. A MariaDB set holds a sequence number of
    /// a domain whichever server wrote it; a set of the other flavour holds nothing.
    pub fn is_in(&self, set: &GtidSet) -> bool {
        match (self, set) {
            (Gtid::Mariadb { domain, seq, .. }, GtidSet::Mariadb(s)) => {
                s.contains_gtid(*domain, *seq)
            }
            (Gtid::Mysql { uuid, tag, gno }, GtidSet::Mysql(s)) => {
                s.contains_tagged(uuid, tag, *gno)
            }
            _ => false,
        }
    }

    /// Adds this transaction to `set`; a set of the other flavour is left as it is.
    pub fn add_to(&self, set: &mut GtidSet) {
        match (self, set) {
            (
                Gtid::Mariadb {
                    domain,
                    server,
                    seq,
                },
                GtidSet::Mariadb(s),
            ) => s.insert(*domain, *server, *seq, *seq),
            (Gtid::Mysql { uuid, tag, gno }, GtidSet::Mysql(s)) => {
                s.insert_tagged(*uuid, *tag, *gno, *gno)
            }
            _ => {}
        }
    }
}

impl fmt::Display for Gtid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Gtid::Mariadb {
                domain,
                server,
                seq,
            } => write!(f, "{domain}-{server}-{seq}"),
            Gtid::Mysql { uuid, tag, gno } if tag.is_untagged() => write!(f, "{uuid}:{gno}"),
            Gtid::Mysql { uuid, tag, gno } => write!(f, "{uuid}:{tag}:{gno}"),
        }
    }
}

impl FromStr for Gtid {
    type Err = GtidError;

    /// `domain-server-seq` (MariaDB), `uuid:n` or `uuid:tag:n` (MySQL).
    fn from_str(text: &str) -> Result<Gtid, GtidError> {
        let number = |n: &str, why: &'static str| {
            n.parse::<u64>().map_err(|_| GtidError::BadMariadb {
                element: text.to_string(),
                why,
            })
        };
        let Some((source, gno)) = text.rsplit_once(':') else {
            let parts: Vec<&str> = text.split('-').collect();
            let [domain, server, seq] = parts[..] else {
                return Err(GtidError::UnknownFlavour(text.to_string()));
            };
            let small = |n: &str| {
                u32::try_from(number(n, "not a number")?).map_err(|_| GtidError::BadMariadb {
                    element: text.to_string(),
                    why: "domain or server id past 2^32",
                })
            };
            return Ok(Gtid::Mariadb {
                domain: small(domain)?,
                server: small(server)?,
                seq: number(seq, "not a number")?,
            });
        };
        let bad_gno = || GtidError::BadInterval {
            interval: gno.to_string(),
            element: text.to_string(),
            why: "not a transaction number from 1",
        };
        let gno = gno
            .parse::<u64>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(bad_gno)?;
        let (uuid, tag) = match source.split_once(':') {
            Some((uuid, tag)) => (uuid, Tag::parse(tag)?),
            None => (source, Tag::UNTAGGED),
        };
        Ok(Gtid::Mysql {
            uuid: Uuid::parse(uuid)?,
            tag,
            gno,
        })
    }
}

/// As its text (`0-1-5`, `uuid:5`), the form every tool prints.
impl Serialize for Gtid {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Gtid {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Gtid, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trips_for_each_form() {
        for text in [
            "0-1-5",
            "3e11fa47-71ca-11e1-9e33-c80aa9429563:7",
            "3e11fa47-71ca-11e1-9e33-c80aa9429563:chaos:2",
        ] {
            let g: Gtid = text.parse().unwrap();
            assert_eq!(g.to_string(), text);
            let json = serde_json::to_string(&g).unwrap();
            assert_eq!(serde_json::from_str::<Gtid>(&json).unwrap(), g);
        }
    }

    #[test]
    fn malformed_text_is_an_error() {
        for text in [
            "",
            "1-2",
            "a-1-2",
            "0-1-5-6",
            "nope:3",
            "3e11fa47-71ca-11e1-9e33-c80aa9429563:0",
            "3e11fa47-71ca-11e1-9e33-c80aa9429563:1bad:1",
        ] {
            assert!(text.parse::<Gtid>().is_err(), "{text}");
        }
    }

    #[test]
    fn membership_and_insertion_agree() {
        for (g, flavour) in [
            ("0-1-5".parse::<Gtid>().unwrap(), Flavour::Mariadb),
            (
                "3e11fa47-71ca-11e1-9e33-c80aa9429563:t:9".parse().unwrap(),
                Flavour::Mysql,
            ),
        ] {
            let mut set = GtidSet::empty(flavour);
            assert!(!g.is_in(&set));
            g.add_to(&mut set);
            assert!(g.is_in(&set), "{g} in {set}");
            // Never in a set of the other flavour.
            let other = match flavour {
                Flavour::Mariadb => Flavour::Mysql,
                Flavour::Mysql => Flavour::Mariadb,
            };
            let mut wrong = GtidSet::empty(other);
            g.add_to(&mut wrong);
            assert!(!g.is_in(&wrong));
        }
    }
}
