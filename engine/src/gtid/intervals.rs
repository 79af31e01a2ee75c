//! Sets of transaction numbers as sorted, disjoint, non-adjacent closed intervals.
//!
//! Both flavours reduce to this: MySQL keeps one per source UUID, MariaDB one per
//! replication domain. Keeping the representation canonical (merged, sorted) makes
//! equality structural, which the property tests rely on.

use std::fmt;

/// A canonical set of `u64` transaction numbers, all `>= 1`.
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Intervals {
    /// Sorted by start; `a.end + 1 < b.start` for consecutive runs; `start <= end`.
    runs: Vec<(u64, u64)>,
}

impl fmt::Debug for Intervals {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.runs.iter().map(|(a, b)| format!("{a}-{b}")))
            .finish()
    }
}

impl Intervals {
    pub fn new() -> Self {
        Self::default()
    }

    /// The set `1..=n` (empty when `n == 0`): what a MariaDB position implies.
    pub fn prefix(n: u64) -> Self {
        let mut s = Self::new();
        if n > 0 {
            s.runs.push((1, n));
        }
        s
    }

    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    pub fn runs(&self) -> &[(u64, u64)] {
        &self.runs
    }

    /// Largest member, if any.
    pub fn last(&self) -> Option<u64> {
        self.runs.last().map(|r| r.1)
    }

    /// `Some(n)` when the set is exactly `1..=n`.
    pub fn as_prefix(&self) -> Option<u64> {
        match self.runs.as_slice() {
            [] => Some(0),
            [(1, n)] => Some(*n),
            _ => None,
        }
    }

    /// Number of members (saturating: a set of all of `u64` does not fit).
    pub fn count(&self) -> u64 {
        self.runs.iter().fold(0u64, |acc, (a, b)| {
            acc.saturating_add(b - a).saturating_add(1)
        })
    }

    pub fn contains(&self, n: u64) -> bool {
        // Runs are sorted and disjoint: binary search on start.
        let idx = self.runs.partition_point(|(a, _)| *a <= n);
        idx > 0 && self.runs[idx - 1].1 >= n
    }

    /// Adds the closed interval `[start, end]`; ignored when `start > end` or `start == 0`.
    pub fn insert(&mut self, start: u64, end: u64) {
        if start == 0 || start > end {
            return;
        }
        let mut merged = Vec::with_capacity(self.runs.len() + 1);
        let (mut s, mut e) = (start, end);
        let mut placed = false;
        for &(a, b) in &self.runs {
            if b.saturating_add(1) < s {
                merged.push((a, b));
            } else if e.saturating_add(1) < a {
                if !placed {
                    merged.push((s, e));
                    placed = true;
                }
                merged.push((a, b));
            } else {
                s = s.min(a);
                e = e.max(b);
            }
        }
        if !placed {
            merged.push((s, e));
        }
        self.runs = merged;
    }

    pub fn union(&self, other: &Self) -> Self {
        let mut out = self.clone();
        for &(a, b) in &other.runs {
            out.insert(a, b);
        }
        out
    }

    /// Members of `self` that are not in `other`.
    pub fn difference(&self, other: &Self) -> Self {
        let mut out = Vec::new();
        let mut j = 0;
        for &(a, b) in &self.runs {
            let mut start = a;
            while j < other.runs.len() && other.runs[j].1 < start {
                j += 1;
            }
            let mut k = j;
            let mut done = false;
            while k < other.runs.len() && other.runs[k].0 <= b {
                let (oa, ob) = other.runs[k];
                if oa > start {
                    out.push((start, oa - 1));
                }
                if ob >= b {
                    done = true;
                    break;
                }
                start = ob + 1;
                k += 1;
            }
            if !done && start <= b {
                out.push((start, b));
            }
        }
        Self { runs: out }
    }

    pub fn intersection(&self, other: &Self) -> Self {
        self.difference(&self.difference(other))
    }

    /// Every member of `other` is in `self`.
    pub fn is_superset(&self, other: &Self) -> bool {
        other.difference(self).is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_merges_adjacent_and_overlapping() {
        let mut s = Intervals::new();
        s.insert(5, 7);
        s.insert(1, 3);
        s.insert(4, 4);
        assert_eq!(s.runs(), &[(1, 7)]);
        s.insert(10, 12);
        s.insert(9, 9);
        assert_eq!(s.runs(), &[(1, 7), (9, 12)]);
        assert_eq!(s.count(), 11);
        assert!(s.contains(9) && !s.contains(8) && !s.contains(13));
    }

    #[test]
    fn difference_splits_runs() {
        let mut a = Intervals::prefix(10);
        a.insert(20, 30);
        let mut b = Intervals::new();
        b.insert(3, 4);
        b.insert(8, 22);
        let d = a.difference(&b);
        assert_eq!(d.runs(), &[(1, 2), (5, 7), (23, 30)]);
        assert!(a.is_superset(&d));
        assert!(a.intersection(&b).runs() == [(3, 4), (8, 10), (20, 22)]);
    }
}
