//! At most one warning per source per interval, with a count of those held
//! back, so a flood of junk packets cannot flood the log.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Sources remembered at most; past that, stale ones are forgotten.
const MAX_SOURCES: usize = 4096;

#[derive(Debug)]
pub struct LogLimiter {
    interval: Duration,
    /// Per source: when it was last logged, and how many were held back since.
    last: HashMap<IpAddr, (Instant, u64)>,
}

impl LogLimiter {
    pub fn new(interval: Duration) -> Self {
        LogLimiter {
            interval,
            last: HashMap::new(),
        }
    }

    /// `Some(held back since the last one)` when an event from `src` at
    /// `now` should be logged, `None` when it is held back.
    pub fn check(&mut self, src: IpAddr, now: Instant) -> Option<u64> {
        if self.last.len() >= MAX_SOURCES && !self.last.contains_key(&src) {
            let interval = self.interval;
            self.last
                .retain(|_, (t, _)| now.saturating_duration_since(*t) < interval);
            if self.last.len() >= MAX_SOURCES {
                self.last.clear();
            }
        }
        match self.last.get_mut(&src) {
            Some((t, held)) if now.saturating_duration_since(*t) < self.interval => {
                *held += 1;
                None
            }
            Some((t, held)) => {
                *t = now;
                Some(std::mem::take(held))
            }
            None => {
                self.last.insert(src, (now, 0));
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_per_source_per_interval_with_a_count() {
        let mut l = LogLimiter::new(Duration::from_secs(1));
        let (a, b): (IpAddr, IpAddr) = (
            "10.0.0.1".parse().expect("ip"),
            "10.0.0.2".parse().expect("ip"),
        );
        let t0 = Instant::now();
        assert_eq!(l.check(a, t0), Some(0));
        for i in 1..50 {
            assert_eq!(l.check(a, t0 + Duration::from_millis(i * 10)), None);
        }
        // Another source is not held back by the first.
        assert_eq!(l.check(b, t0 + Duration::from_millis(100)), Some(0));
        assert_eq!(l.check(a, t0 + Duration::from_millis(1000)), Some(49));
        assert_eq!(l.check(a, t0 + Duration::from_millis(1500)), None);
        assert_eq!(l.check(a, t0 + Duration::from_millis(2100)), Some(1));
        // A flood of sources stays bounded.
        for i in 0..10_000u32 {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            l.check(ip, t0 + Duration::from_secs(10) + Duration::from_millis(i as u64));
        }
        assert!(l.last.len() <= MAX_SOURCES);
    }
}
