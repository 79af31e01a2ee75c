//! MariaDB GTID positions: `domain-server-seq` per replication domain, e.g. `0-1-100,1-2-5`.
//!
//! With `gtid_strict_mode`, sequence numbers grow monotonically within a domain, so a
//! position `0-1-100` stands for transactions 1..=100 of domain 0. We keep the members as
//! intervals so that a difference (errant transactions) is representable; a set that is
//! not a prefix of its domain prints as `domain-server:a-b:c` (our extension, parsed back).

use super::intervals::Intervals;
use super::mysql::parse_interval;
use super::GtidError;
use std::collections::BTreeMap;
use std::fmt;

#[derive(Clone, Default, PartialEq, Eq, Hash, Debug)]
pub struct DomainPos {
    /// server_id of the highest sequence number seen in this domain.
    pub server_id: u32,
    pub seqs: Intervals,
}

#[derive(Clone, Default, PartialEq, Eq, Hash, Debug)]
pub struct MariadbGtidSet {
    /// Invariant: no domain with empty `seqs`.
    domains: BTreeMap<u32, DomainPos>,
}

impl MariadbGtidSet {
    pub fn parse(text: &str) -> Result<Self, GtidError> {
        let mut set = Self::default();
        for raw in text.split(',') {
            let part = raw.trim();
            if part.is_empty() {
                if text.trim().is_empty() {
                    continue;
                }
                return Err(GtidError::EmptyElement(text.trim().to_string()));
            }
            let (head, ranges) = match part.split_once(':') {
                Some((h, r)) => (h, Some(r)),
                None => (part, None),
            };
            let nums: Vec<&str> = head.split('-').collect();
            let field = |i: usize, what: &'static str| -> Result<u64, GtidError> {
                let s = nums[i].trim();
                if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(GtidError::BadMariadb {
                        element: part.to_string(),
                        why: what,
                    });
                }
                s.parse::<u64>().map_err(|_| GtidError::BadMariadb {
                    element: part.to_string(),
                    why: what,
                })
            };
            let u32_field = |i: usize, what: &'static str| -> Result<u32, GtidError> {
                u32::try_from(field(i, what)?).map_err(|_| GtidError::BadMariadb {
                    element: part.to_string(),
                    why: what,
                })
            };
            match (nums.len(), ranges) {
                (3, None) => {
                    let domain = u32_field(0, "domain id is not a 32-bit number")?;
                    let server = u32_field(1, "server id is not a 32-bit number")?;
                    let seq = field(2, "sequence number is not a 64-bit number")?;
                    set.insert(domain, server, 1, seq);
                }
                (2, Some(ranges)) => {
                    let domain = u32_field(0, "domain id is not a 32-bit number")?;
                    let server = u32_field(1, "server id is not a 32-bit number")?;
                    for r in ranges.split(':') {
                        let (a, b) = parse_interval(r.trim(), part)?;
                        set.insert(domain, server, a, b);
                    }
                }
                _ => {
                    return Err(GtidError::BadMariadb {
                        element: part.to_string(),
                        why: "expected domain-server-sequence",
                    })
                }
            }
        }
        Ok(set)
    }

    /// Adds `domain`'s sequence numbers `start..=end`, written by `server_id`.
    pub fn insert(&mut self, domain: u32, server_id: u32, start: u64, end: u64) {
        if start == 0 || start > end {
            return;
        }
        let d = self.domains.entry(domain).or_default();
        // The domain's server is the writer of its highest sequence number; on a tie the
        // larger id wins, so that union does not depend on argument order.
        match d.seqs.last() {
            None => d.server_id = server_id,
            Some(last) if end > last => d.server_id = server_id,
            Some(last) if end == last => d.server_id = d.server_id.max(server_id),
            Some(_) => {}
        }
        d.seqs.insert(start, end);
    }

    pub fn domains(&self) -> impl Iterator<Item = (&u32, &DomainPos)> {
        self.domains.iter()
    }

    /// The highest sequence number in `domain` (0 when none).
    pub fn seq(&self, domain: u32) -> u64 {
        self.domains
            .get(&domain)
            .and_then(|d| d.seqs.last())
            .unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.domains.is_empty()
    }

    pub fn count(&self) -> u64 {
        self.domains
            .values()
            .fold(0u64, |acc, d| acc.saturating_add(d.seqs.count()))
    }

    pub fn contains_gtid(&self, domain: u32, seq: u64) -> bool {
        self.domains
            .get(&domain)
            .is_some_and(|d| d.seqs.contains(seq))
    }

    pub fn is_superset(&self, other: &Self) -> bool {
        other.domains.iter().all(|(dom, theirs)| {
            self.domains
                .get(dom)
                .is_some_and(|ours| ours.seqs.is_superset(&theirs.seqs))
        })
    }

    pub fn union(&self, other: &Self) -> Self {
        let mut out = self.clone();
        for (dom, theirs) in &other.domains {
            for &(a, b) in theirs.seqs.runs() {
                out.insert(*dom, theirs.server_id, a, b);
            }
        }
        out
    }

    pub fn difference(&self, other: &Self) -> Self {
        let mut out = Self::default();
        for (dom, ours) in &self.domains {
            let seqs = match other.domains.get(dom) {
                Some(theirs) => ours.seqs.difference(&theirs.seqs),
                None => ours.seqs.clone(),
            };
            if !seqs.is_empty() {
                out.domains.insert(
                    *dom,
                    DomainPos {
                        server_id: ours.server_id,
                        seqs,
                    },
                );
            }
        }
        out
    }
}

impl fmt::Display for MariadbGtidSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (dom, pos)) in self.domains.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            match pos.seqs.as_prefix() {
                Some(n) => write!(f, "{dom}-{}-{n}", pos.server_id)?,
                None => {
                    write!(f, "{dom}-{}", pos.server_id)?;
                    for &(a, b) in pos.seqs.runs() {
                        if a == b {
                            write!(f, ":{a}")?;
                        } else {
                            write!(f, ":{a}-{b}")?;
                        }
                    }
                }
            }
        }
        Ok(())
    }
}
