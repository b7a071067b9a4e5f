//! Byte ranges ("extents") and sorted, merged lists of them.

use serde::{Deserialize, Serialize};

/// A byte range `[start, start + len)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Extent {
    pub start: u64,
    pub len: u64,
}

impl Extent {
    pub fn new(start: u64, len: u64) -> Self {
        Self { start, len }
    }

    pub fn end(&self) -> u64 {
        self.start + self.len
    }
}

/// Sort, merge overlapping and adjacent extents, drop empty ones, and clip
/// everything to `[0, limit)`.
pub fn normalize(mut v: Vec<Extent>, limit: u64) -> Vec<Extent> {
    v.retain(|e| e.len > 0 && e.start < limit);
    for e in v.iter_mut() {
        if e.end() > limit {
            e.len = limit - e.start;
        }
    }
    v.sort_unstable();
    let mut out: Vec<Extent> = Vec::with_capacity(v.len());
    for e in v {
        match out.last_mut() {
            Some(last) if e.start <= last.end() => {
                let end = last.end().max(e.end());
                last.len = end - last.start;
            }
            _ => out.push(e),
        }
    }
    out
}

/// Total bytes covered by a normalized list.
pub fn total(v: &[Extent]) -> u64 {
    v.iter().map(|e| e.len).sum()
}

/// Builds a normalized extent list from a bitmap of fixed-size units
/// (filesystem blocks or clusters), merging runs as it goes so memory stays
/// proportional to the number of runs, not of units.
#[derive(Debug, Default)]
pub struct RunBuilder {
    out: Vec<Extent>,
}

impl RunBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add `[start, start + len)`; callers may add in any order, but adding in
    /// ascending order keeps memory small.
    pub fn add(&mut self, start: u64, len: u64) {
        if len == 0 {
            return;
        }
        if let Some(last) = self.out.last_mut() {
            if start >= last.start && start <= last.end() {
                let end = last.end().max(start + len);
                last.len = end - last.start;
                return;
            }
        }
        self.out.push(Extent::new(start, len));
    }

    pub fn finish(self, limit: u64) -> Vec<Extent> {
        normalize(self.out, limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_merges_and_clips() {
        let v = vec![
            Extent::new(100, 10),
            Extent::new(0, 10),
            Extent::new(10, 5),
            Extent::new(105, 20),
            Extent::new(200, 0),
            Extent::new(500, 100),
        ];
        assert_eq!(
            normalize(v, 550),
            vec![Extent::new(0, 15), Extent::new(100, 25), Extent::new(500, 50)]
        );
    }

    #[test]
    fn run_builder_merges_adjacent() {
        let mut b = RunBuilder::new();
        b.add(0, 4096);
        b.add(4096, 4096);
        b.add(16384, 4096);
        b.add(1000, 10);
        assert_eq!(b.finish(1 << 20), vec![Extent::new(0, 8192), Extent::new(16384, 4096)]);
    }
}
