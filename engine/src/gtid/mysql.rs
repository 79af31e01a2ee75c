//! MySQL GTID sets: `3E11FA47-71CA-11E1-9E33-C80AA9429562:1-5:7-9,<uuid>:<intervals>`,
//! with MySQL 8.3's tags: `<uuid>:1-5:tag_a:1-3:tag_b:7` (a tag applies to the
//! intervals after it; `uuid:tag:n` and `uuid:n` are different transactions).

use super::intervals::Intervals;
use super::GtidError;
use std::collections::BTreeMap;
use std::fmt;

/// A source server's UUID, 16 bytes; displayed in lowercase as MySQL prints it.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Uuid(pub [u8; 16]);

impl Uuid {
    pub fn parse(s: &str) -> Result<Self, GtidError> {
        let bad = || GtidError::BadUuid(s.to_string());
        let groups: Vec<&str> = s.split('-').collect();
        if groups.iter().map(|g| g.len()).collect::<Vec<_>>() != [8, 4, 4, 4, 12] {
            return Err(bad());
        }
        let hex: String = groups.concat();
        let mut out = [0u8; 16];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2).ok_or_else(bad)?, 16)
                .map_err(|_| bad())?;
        }
        Ok(Uuid(out))
    }
}

impl fmt::Display for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A GTID tag (MySQL 8.3+): `[a-z_][a-z0-9_]{0,31}`, given in any case and kept in
/// lowercase, as MySQL prints it. The empty tag is "untagged". Fixed-size, so that a
/// GTID stays `Copy`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Tag {
    len: u8,
    bytes: [u8; Tag::MAX],
}

impl Tag {
    pub const MAX: usize = 32;

    pub const UNTAGGED: Tag = Tag {
        len: 0,
        bytes: [0; Tag::MAX],
    };

    pub fn parse(text: &str) -> Result<Tag, GtidError> {
        let lower = text.to_ascii_lowercase();
        let b = lower.as_bytes();
        let ok = !b.is_empty()
            && b.len() <= Tag::MAX
            && (b[0].is_ascii_lowercase() || b[0] == b'_')
            && b.iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_');
        if !ok {
            return Err(GtidError::BadTag(text.to_string()));
        }
        let mut bytes = [0u8; Tag::MAX];
        bytes[..b.len()].copy_from_slice(b);
        Ok(Tag {
            len: b.len() as u8,
            bytes,
        })
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII letters, digits and '_' are ever stored.
        std::str::from_utf8(&self.bytes[..self.len as usize]).unwrap_or_default()
    }

    pub fn is_untagged(&self) -> bool {
        self.len == 0
    }
}

impl Ord for Tag {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl PartialOrd for Tag {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tag({:?})", self.as_str())
    }
}

/// `gtid_executed`-style set: per source UUID and tag, the transaction numbers applied.
#[derive(Clone, Default, PartialEq, Eq, Hash, Debug)]
pub struct MysqlGtidSet {
    /// Invariant: no empty `Intervals` values. Untagged before tagged, per UUID.
    sources: BTreeMap<(Uuid, Tag), Intervals>,
}

impl MysqlGtidSet {
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
            let mut fields = part.split(':');
            let uuid = Uuid::parse(fields.next().unwrap_or_default().trim())?;
            // A tag applies to the intervals after it, up to the next tag.
            let (mut tag, mut intervals) = (Tag::UNTAGGED, 0usize);
            let mut tag_waiting = false;
            for field in fields {
                let field = field.trim();
                if field
                    .bytes()
                    .next()
                    .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
                {
                    if tag_waiting {
                        return Err(GtidError::MissingIntervals(part.to_string()));
                    }
                    tag = Tag::parse(field)?;
                    tag_waiting = true;
                    continue;
                }
                let (start, end) = parse_interval(field, part)?;
                set.insert_tagged(uuid, tag, start, end);
                intervals += 1;
                tag_waiting = false;
            }
            if intervals == 0 || tag_waiting {
                return Err(GtidError::MissingIntervals(part.to_string()));
            }
        }
        Ok(set)
    }

    /// Untagged transactions `start..=end` of `uuid`.
    pub fn insert(&mut self, uuid: Uuid, start: u64, end: u64) {
        self.insert_tagged(uuid, Tag::UNTAGGED, start, end)
    }

    pub fn insert_tagged(&mut self, uuid: Uuid, tag: Tag, start: u64, end: u64) {
        if start == 0 || start > end {
            return;
        }
        self.sources
            .entry((uuid, tag))
            .or_default()
            .insert(start, end);
    }

    /// Every (UUID, tag) with its transactions.
    pub fn sources(&self) -> impl Iterator<Item = (&(Uuid, Tag), &Intervals)> {
        self.sources.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    pub fn count(&self) -> u64 {
        self.sources
            .values()
            .fold(0u64, |acc, i| acc.saturating_add(i.count()))
    }

    /// The untagged transaction `uuid:n`.
    pub fn contains_gtid(&self, uuid: &Uuid, n: u64) -> bool {
        self.contains_tagged(uuid, &Tag::UNTAGGED, n)
    }

    /// `uuid:tag:n` (`uuid:n` for the untagged tag).
    pub fn contains_tagged(&self, uuid: &Uuid, tag: &Tag, n: u64) -> bool {
        self.sources
            .get(&(*uuid, *tag))
            .is_some_and(|i| i.contains(n))
    }

    pub fn is_superset(&self, other: &Self) -> bool {
        other.sources.iter().all(|(u, theirs)| {
            self.sources
                .get(u)
                .is_some_and(|ours| ours.is_superset(theirs))
        })
    }

    pub fn union(&self, other: &Self) -> Self {
        let mut out = self.clone();
        for (u, theirs) in &other.sources {
            let merged = out
                .sources
                .get(u)
                .map_or_else(|| theirs.clone(), |ours| ours.union(theirs));
            out.sources.insert(*u, merged);
        }
        out
    }

    pub fn difference(&self, other: &Self) -> Self {
        let mut out = Self::default();
        for (u, ours) in &self.sources {
            let d = match other.sources.get(u) {
                Some(theirs) => ours.difference(theirs),
                None => ours.clone(),
            };
            if !d.is_empty() {
                out.sources.insert(*u, d);
            }
        }
        out
    }
}

pub(super) fn parse_interval(field: &str, element: &str) -> Result<(u64, u64), GtidError> {
    let bad = |why: &'static str| GtidError::BadInterval {
        interval: field.to_string(),
        element: element.to_string(),
        why,
    };
    let num = |s: &str| -> Result<u64, GtidError> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("not a number"));
        }
        s.parse::<u64>().map_err(|_| bad("number too large"))
    };
    let (start, end) = match field.split_once('-') {
        Some((a, b)) => (num(a.trim())?, num(b.trim())?),
        // A tag never reaches here: the MySQL parser takes it first.
        None => {
            let n = num(field)?;
            (n, n)
        }
    };
    if start == 0 {
        return Err(bad("transaction numbers start at 1"));
    }
    if start > end {
        return Err(bad("interval start is after its end"));
    }
    Ok((start, end))
}

impl fmt::Display for MysqlGtidSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut last: Option<Uuid> = None;
        for ((uuid, tag), ints) in &self.sources {
            if last != Some(*uuid) {
                if last.is_some() {
                    f.write_str(",")?;
                }
                write!(f, "{uuid}")?;
                last = Some(*uuid);
            }
            if !tag.is_untagged() {
                write!(f, ":{tag}")?;
            }
            for &(a, b) in ints.runs() {
                if a == b {
                    write!(f, ":{a}")?;
                } else {
                    write!(f, ":{a}-{b}")?;
                }
            }
        }
        Ok(())
    }
}
