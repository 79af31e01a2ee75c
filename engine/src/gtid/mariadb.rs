//! MariaDB GTID sets: `domain-server-seq` elements, e.g. `0-1-100,1-2-5`.
//!
//! With `gtid_strict_mode`, sequence numbers grow monotonically within a domain, so a
//! position `0-1-100` stands for transactions 1..=100 of domain 0: positions compare
//! per domain by sequence number ([`MariadbGtidSet::is_superset`]).
//!
//! A set also remembers, per domain, the last sequence number each server wrote, as
//! `gtid_binlog_state` lists it (`0-1-435,0-2-900`). That is what tells a diverged
//! server apart: an old master holding `0-1-437` is behind a new master at `0-2-900` by
//! sequence number, yet `0-1-436` and `0-1-437` are in no history but its own. The
//! difference ([`MariadbGtidSet::difference`]) counts those as errant; compare binlog
//! states with it, not bare positions.
//!
//! A set that is not a prefix of its domain prints as `domain-server:a-b:c` (our
//! extension, parsed back); other servers' last sequence numbers follow as
//! `domain-server:n`.

use super::intervals::Intervals;
use super::mysql::parse_interval;
use super::GtidError;
use std::collections::BTreeMap;
use std::fmt;

#[derive(Clone, Default, PartialEq, Eq, Hash, Debug)]
pub struct DomainPos {
    pub seqs: Intervals,
    /// The last sequence number each server wrote in this domain. Invariant: every
    /// value is in `seqs`, and the largest value is `seqs`' largest member.
    pub servers: BTreeMap<u32, u64>,
}

impl DomainPos {
    /// The server that wrote the highest sequence number (the larger id on a tie).
    pub fn server_id(&self) -> u32 {
        let top = self.seqs.last().unwrap_or(0);
        self.servers
            .iter()
            .filter(|(_, n)| **n == top)
            .map(|(s, _)| *s)
            .max()
            .unwrap_or(0)
    }

    /// Rebuilds the server map for a subset `seqs` of this domain, keeping the
    /// invariant: entries whose sequence number left the set go, and the new highest
    /// member is credited to the first server whose last write lies at or above it.
    fn restricted_to(&self, seqs: Intervals) -> DomainPos {
        let mut servers: BTreeMap<u32, u64> = self
            .servers
            .iter()
            .filter(|(_, n)| seqs.contains(**n))
            .map(|(s, n)| (*s, *n))
            .collect();
        if let Some(top) = seqs.last() {
            if !servers.values().any(|n| *n == top) {
                let owner = self
                    .servers
                    .iter()
                    .filter(|(_, n)| **n >= top)
                    .min_by_key(|(s, n)| (**n, **s))
                    .map(|(s, _)| *s)
                    .unwrap_or(0);
                servers.insert(owner, top);
            }
        }
        DomainPos { seqs, servers }
    }
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
        d.seqs.insert(start, end);
        let last = d.servers.entry(server_id).or_insert(end);
        *last = (*last).max(end);
    }

    pub fn domains(&self) -> impl Iterator<Item = (&u32, &DomainPos)> {
        self.domains.iter()
    }

    pub fn domain(&self, domain: u32) -> Option<&DomainPos> {
        self.domains.get(&domain)
    }

    /// The highest sequence number in `domain` (0 when none).
    pub fn seq(&self, domain: u32) -> u64 {
        self.domain(domain).and_then(|d| d.seqs.last()).unwrap_or(0)
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
        self.domain(domain).is_some_and(|d| d.seqs.contains(seq))
    }

    /// Per domain, by sequence number: what positions compare by.
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
            let d = out.domains.entry(*dom).or_default();
            d.seqs = d.seqs.union(&theirs.seqs);
            for (s, n) in &theirs.servers {
                let last = d.servers.entry(*s).or_insert(*n);
                *last = (*last).max(*n);
            }
        }
        out
    }

    /// Transactions of `self` that `other` lacks: sequence numbers it does not have,
    /// and what each server wrote in `self` past its last write in `other` (there the
    /// same sequence numbers were written by someone else). Both sets must be full
    /// binlog states (`gtid_binlog_state`): a bare position names only the last
    /// server, and every other server's transactions would count as missing.
    pub fn difference(&self, other: &Self) -> Self {
        let mut out = Self::default();
        for (dom, ours) in &self.domains {
            let mut seqs = match other.domains.get(dom) {
                Some(theirs) => ours.seqs.difference(&theirs.seqs),
                None => ours.seqs.clone(),
            };
            // A server whose last write here is past its last write there (or that
            // never wrote there at all) wrote those transactions in a history `other`
            // does not share, whatever sequence numbers `other` holds.
            let theirs = other.domains.get(dom);
            for (s, n) in &ours.servers {
                let t = theirs.and_then(|d| d.servers.get(s)).copied().unwrap_or(0);
                if *n > t {
                    let mut diverged = Intervals::new();
                    diverged.insert(t + 1, *n);
                    seqs = seqs.union(&ours.seqs.intersection(&diverged));
                }
            }
            if !seqs.is_empty() {
                out.domains.insert(*dom, ours.restricted_to(seqs));
            }
        }
        out
    }
}

impl fmt::Display for MariadbGtidSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        let mut sep = |f: &mut fmt::Formatter<'_>| -> fmt::Result {
            if !std::mem::take(&mut first) {
                f.write_str(",")?;
            }
            Ok(())
        };
        for (dom, pos) in &self.domains {
            match pos.seqs.as_prefix() {
                // gtid_binlog_state's own form: each server's last write.
                Some(_) => {
                    for (s, n) in &pos.servers {
                        sep(f)?;
                        write!(f, "{dom}-{s}-{n}")?;
                    }
                }
                None => {
                    let top = pos.server_id();
                    sep(f)?;
                    write!(f, "{dom}-{top}")?;
                    for &(a, b) in pos.seqs.runs() {
                        if a == b {
                            write!(f, ":{a}")?;
                        } else {
                            write!(f, ":{a}-{b}")?;
                        }
                    }
                    for (s, n) in pos.servers.iter().filter(|(s, _)| **s != top) {
                        sep(f)?;
                        write!(f, "{dom}-{s}:{n}")?;
                    }
                }
            }
        }
        Ok(())
    }
}
