//! RFC 9051 `sequence-set`: `1,3:5,7:*,*`.

use std::fmt;
use std::str::FromStr;

/// One end of a range: a number or `*` (the largest number in use).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SeqNum {
    Num(u32),
    Star,
}

impl SeqNum {
    fn resolve(self, star: u32) -> u32 {
        match self {
            SeqNum::Num(n) => n,
            SeqNum::Star => star,
        }
    }
}

impl fmt::Display for SeqNum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SeqNum::Num(n) => write!(f, "{n}"),
            SeqNum::Star => f.write_str("*"),
        }
    }
}

/// A parsed sequence set (message sequence numbers or UIDs). The ranges are
/// kept as written (`5:2` stays `5:2`; it means the same as `2:5`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SequenceSet {
    ranges: Vec<(SeqNum, SeqNum)>,
}

impl SequenceSet {
    /// Parse a sequence set. `None` for anything invalid, for `0`, for
    /// numbers above `u32::MAX`, and for `$` (SEARCHRES, unsupported here).
    /// Leading zeros are accepted (`01`), as Dovecot does.
    pub fn parse(input: &[u8]) -> Option<SequenceSet> {
        if input.is_empty() {
            return None;
        }
        let mut ranges = Vec::new();
        for elem in input.split(|b| *b == b',') {
            let mut ends = elem.splitn(2, |b| *b == b':');
            let a = parse_seq_num(ends.next()?)?;
            let b = match ends.next() {
                Some(e) => parse_seq_num(e)?,
                None => a,
            };
            ranges.push((a, b));
        }
        Some(SequenceSet { ranges })
    }

    /// A set made of these ranges (each `(a, b)` means `a:b`). `None` if
    /// empty or a number is 0.
    pub fn from_ranges(ranges: Vec<(SeqNum, SeqNum)>) -> Option<SequenceSet> {
        let zero = |n: &SeqNum| *n == SeqNum::Num(0);
        if ranges.is_empty() || ranges.iter().any(|(a, b)| zero(a) || zero(b)) {
            return None;
        }
        Some(SequenceSet { ranges })
    }

    /// The ranges as written.
    pub fn ranges(&self) -> &[(SeqNum, SeqNum)] {
        &self.ranges
    }

    /// True if the set mentions `*` anywhere.
    pub fn has_star(&self) -> bool {
        self.ranges
            .iter()
            .any(|(a, b)| *a == SeqNum::Star || *b == SeqNum::Star)
    }

    /// Is `n` in the set, `*` standing for `star_value` (the highest number in
    /// use)? Pure set membership: with UIDs, `5:*` and `star_value` 3 means
    /// `3:5`, which contains 4 even if no message has UID 4.
    pub fn contains(&self, n: u32, star_value: u32) -> bool {
        n != 0
            && self.ranges.iter().any(|(a, b)| {
                let (a, b) = (a.resolve(star_value), b.resolve(star_value));
                a.min(b) <= n && n <= a.max(b)
            })
    }

    /// The set as sorted, merged, non-overlapping inclusive ranges, `*`
    /// resolved to `star` and everything clipped to `1..=star` (numbers
    /// above the highest one in use name no message). Its length is bounded
    /// by the number of ranges written.
    pub fn resolved_ranges(&self, star: u32) -> Vec<(u32, u32)> {
        let mut rs: Vec<(u32, u32)> = self
            .ranges
            .iter()
            .filter_map(|(a, b)| {
                let (a, b) = (a.resolve(star), b.resolve(star));
                let (lo, hi) = (a.min(b).max(1), a.max(b).min(star));
                (lo <= hi).then_some((lo, hi))
            })
            .collect();
        rs.sort_unstable();
        let mut out: Vec<(u32, u32)> = Vec::with_capacity(rs.len());
        for (lo, hi) in rs {
            match out.last_mut() {
                Some(last) if lo <= last.1.saturating_add(1) => last.1 = last.1.max(hi),
                _ => out.push((lo, hi)),
            }
        }
        out
    }

    /// How many numbers [`SequenceSet::iter_resolved`] would yield.
    pub fn count_resolved(&self, star: u32) -> u64 {
        self.resolved_ranges(star)
            .iter()
            .map(|(lo, hi)| u64::from(hi - lo) + 1)
            .sum()
    }

    /// The numbers of the set in ascending order without duplicates, `*`
    /// resolved to `star`, clipped to `1..=star`. `None` if that would be more
    /// than `limit` numbers (so a client's `1:*` cannot make us expand four
    /// billion numbers).
    pub fn iter_resolved(&self, star: u32, limit: usize) -> Option<impl Iterator<Item = u32>> {
        let ranges = self.resolved_ranges(star);
        let count: u64 = ranges.iter().map(|(lo, hi)| u64::from(hi - lo) + 1).sum();
        if count > u64::try_from(limit).unwrap_or(u64::MAX) {
            return None;
        }
        Some(ranges.into_iter().flat_map(|(lo, hi)| lo..=hi))
    }

    /// Compact form of a list of numbers: `[1, 2, 3, 7]` → `1:3,7`. The
    /// input should be sorted; it is sorted and deduplicated anyway. Zeros
    /// are skipped (not valid sequence numbers); an empty input gives `""`.
    pub fn from_sorted(nums: &[u32]) -> String {
        let sorted = nums.windows(2).all(|w| matches!(w, [a, b] if a < b));
        let owned;
        let nums = if sorted {
            nums
        } else {
            let mut v = nums.to_vec();
            v.sort_unstable();
            v.dedup();
            owned = v;
            &owned[..]
        };
        let mut out = String::new();
        let mut run: Option<(u32, u32)> = None;
        let emit = |out: &mut String, (lo, hi): (u32, u32)| {
            if !out.is_empty() {
                out.push(',');
            }
            if lo == hi {
                out.push_str(&lo.to_string());
            } else {
                out.push_str(&format!("{lo}:{hi}"));
            }
        };
        for &n in nums.iter().filter(|n| **n != 0) {
            run = match run {
                Some((lo, hi)) if hi.checked_add(1) == Some(n) => Some((lo, n)),
                Some(r) => {
                    emit(&mut out, r);
                    Some((n, n))
                }
                None => Some((n, n)),
            };
        }
        if let Some(r) = run {
            emit(&mut out, r);
        }
        out
    }
}

impl fmt::Display for SequenceSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (a, b)) in self.ranges.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if a == b {
                write!(f, "{a}")?;
            } else {
                write!(f, "{a}:{b}")?;
            }
        }
        Ok(())
    }
}

impl FromStr for SequenceSet {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        SequenceSet::parse(s.as_bytes()).ok_or(())
    }
}

fn parse_seq_num(s: &[u8]) -> Option<SeqNum> {
    if s == b"*" {
        return Some(SeqNum::Star);
    }
    if s.is_empty() || s.len() > 20 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(s).ok()?.parse().ok()?;
    match u32::try_from(n) {
        Ok(0) | Err(_) => None,
        Ok(n) => Some(SeqNum::Num(n)),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn set(s: &str) -> SequenceSet {
        SequenceSet::parse(s.as_bytes()).expect(s)
    }

    #[test]
    fn parse_valid_and_display() {
        for s in ["1", "*", "1:3", "1,3:5,7:*,*", "5:2", "4294967295", "*:4"] {
            assert_eq!(set(s).to_string(), s);
        }
        assert_eq!(set("01:002").to_string(), "1:2");
        assert_eq!("2:4".parse::<SequenceSet>(), Ok(set("2:4")));
    }

    #[test]
    fn parse_invalid() {
        for s in [
            "",
            "0",
            "1:0",
            "$",
            "1,$",
            "1,",
            ",1",
            "1::2",
            "1:2:3",
            "a",
            "-1",
            " 1",
            "1 ",
            "4294967296",
            "1:4294967296",
            "**",
            "1:",
            ":1",
            "99999999999999999999999",
        ] {
            assert_eq!(SequenceSet::parse(s.as_bytes()), None, "{s:?}");
        }
        assert!(SequenceSet::from_ranges(vec![]).is_none());
        assert!(SequenceSet::from_ranges(vec![(SeqNum::Num(0), SeqNum::Star)]).is_none());
        let s = SequenceSet::from_ranges(vec![(SeqNum::Num(2), SeqNum::Star)]).unwrap();
        assert_eq!(s.to_string(), "2:*");
    }

    #[test]
    fn contains_and_star() {
        let s = set("1,3:5,7:*");
        assert!(s.has_star());
        assert!(!set("1:3").has_star());
        let yes = [1, 3, 4, 5, 7, 8, 9, 10];
        for n in 0..=11 {
            assert_eq!(s.contains(n, 10), yes.contains(&n), "{n}");
        }
        // reversed range, star below the start
        assert!(set("5:2").contains(3, 0));
        assert!(set("9:*").contains(4, 4));
        assert!(set("9:*").contains(6, 4));
        assert!(!set("9:*").contains(3, 4));
        assert!(set("*").contains(4, 4));
        assert!(!set("*").contains(3, 4));
    }

    #[test]
    fn resolve_sorted_merged_clipped() {
        let s = set("7:*,1,3:5,4,2,*");
        assert_eq!(s.resolved_ranges(9), vec![(1, 5), (7, 9)]);
        assert_eq!(s.count_resolved(9), 8);
        let v: Vec<u32> = s.iter_resolved(9, 100).unwrap().collect();
        assert_eq!(v, [1, 2, 3, 4, 5, 7, 8, 9]);
        // numbers above star are dropped; UID-style 9:* with star 4 is 4:9 → 4
        let v: Vec<u32> = set("9:*").iter_resolved(4, 100).unwrap().collect();
        assert_eq!(v, [4]);
        assert_eq!(set("1:*").iter_resolved(0, 10).unwrap().count(), 0);
        assert_eq!(set("5:3").resolved_ranges(10), vec![(3, 5)]);
    }

    #[test]
    fn iter_resolved_is_bounded() {
        let s = set("1:*");
        assert!(s.iter_resolved(u32::MAX, 1000).is_none());
        assert_eq!(s.count_resolved(u32::MAX), u64::from(u32::MAX));
        assert_eq!(s.iter_resolved(1000, 1000).unwrap().count(), 1000);
        assert!(s.iter_resolved(1001, 1000).is_none());
        let v: Vec<u32> = set("4294967294:*")
            .iter_resolved(u32::MAX, 5)
            .unwrap()
            .collect();
        assert_eq!(v, [u32::MAX - 1, u32::MAX]);
        // adjacent ranges ending at u32::MAX merge without overflow
        let s = set("4294967295,1:4294967294");
        assert_eq!(s.resolved_ranges(u32::MAX), vec![(1, u32::MAX)]);
    }

    #[test]
    fn compact_formatting() {
        assert_eq!(SequenceSet::from_sorted(&[]), "");
        assert_eq!(SequenceSet::from_sorted(&[1, 2, 3, 7]), "1:3,7");
        assert_eq!(SequenceSet::from_sorted(&[5]), "5");
        assert_eq!(SequenceSet::from_sorted(&[1, 3, 5, 6]), "1,3,5:6");
        assert_eq!(SequenceSet::from_sorted(&[7, 3, 2, 1, 2]), "1:3,7");
        assert_eq!(SequenceSet::from_sorted(&[0, 1]), "1");
        assert_eq!(
            SequenceSet::from_sorted(&[u32::MAX - 1, u32::MAX]),
            "4294967294:4294967295"
        );
        // round trip
        let nums = [2, 3, 4, 10, 12, 13];
        let s = set(&SequenceSet::from_sorted(&nums));
        let back: Vec<u32> = s.iter_resolved(100, 100).unwrap().collect();
        assert_eq!(back, nums);
    }
}
