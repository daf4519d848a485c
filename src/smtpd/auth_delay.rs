//! The delay before a `535` that grows with each failed AUTH from one client address:
//! 1 s, 2 s, 4 s ... capped at [`MAX_DELAY`], forgotten after [`FORGET_AFTER`] without a
//! failure. Shared by all connections (keyed by listener and address), so opening a new
//! connection per guess gains nothing; bounded to [`MAX_ENTRIES`] addresses so that a
//! flood of sources cannot grow it without end. An IPv6 client counts by its /64: one host
//! commonly holds a whole /64 and could otherwise take a fresh address for each guess.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const MAX_DELAY: Duration = Duration::from_secs(30);
pub const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);
pub const MAX_ENTRIES: usize = 10_000;

#[derive(Default)]
pub struct FailureDelays {
    entries: Mutex<HashMap<(String, Option<IpAddr>), Entry>>,
}

#[derive(Clone, Copy)]
struct Entry {
    failures: u32,
    last: Instant,
}

impl FailureDelays {
    /// Records a failure and returns how long to wait before answering it.
    pub fn failed(&self, listener: &str, ip: Option<IpAddr>) -> Duration {
        self.failed_at(listener, ip, Instant::now())
    }

    fn failed_at(&self, listener: &str, ip: Option<IpAddr>, now: Instant) -> Duration {
        let mut map = match self.entries.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        let key = (listener.to_string(), client_key(ip));
        if !map.contains_key(&key) && map.len() >= MAX_ENTRIES {
            map.retain(|_, e| now.duration_since(e.last) < FORGET_AFTER);
            if map.len() >= MAX_ENTRIES
                && let Some(oldest) = map
                    .iter()
                    .min_by_key(|(_, e)| e.last)
                    .map(|(k, _)| k.clone())
            {
                map.remove(&oldest);
            }
        }
        let e = map.entry(key).or_insert(Entry {
            failures: 0,
            last: now,
        });
        if now.duration_since(e.last) >= FORGET_AFTER {
            e.failures = 0;
        }
        e.failures = e.failures.saturating_add(1);
        e.last = now;
        delay_for(e.failures)
    }

    /// A successful AUTH from `ip` clears its record.
    pub fn succeeded(&self, listener: &str, ip: Option<IpAddr>) {
        let mut map = match self.entries.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        map.remove(&(listener.to_string(), client_key(ip)));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.lock().map(|m| m.len()).unwrap_or(0)
    }
}

/// Whose failures `ip`'s count with: an IPv4 address (also when written IPv4-mapped), or
/// an IPv6 address's /64.
fn client_key(ip: Option<IpAddr>) -> Option<IpAddr> {
    Some(match ip?.to_canonical() {
        IpAddr::V6(v6) => {
            let net = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(net.into())
        }
        v4 => v4,
    })
}

/// 2^(n-1) seconds for the n-th failure, capped.
fn delay_for(failures: u32) -> Duration {
    let secs = 1u64 << failures.saturating_sub(1).min(10);
    Duration::from_secs(secs).min(MAX_DELAY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_caps_and_is_forgotten() {
        let d = FailureDelays::default();
        let ip = Some("192.0.2.1".parse().unwrap());
        let t0 = Instant::now();
        let got: Vec<u64> = (0..7)
            .map(|i| d.failed_at("mx", ip, t0 + Duration::from_secs(i)).as_secs())
            .collect();
        assert_eq!(got, [1, 2, 4, 8, 16, 30, 30]);
        // Another address, another listener: their own count.
        assert_eq!(d.failed_at("mx", None, t0).as_secs(), 1);
        assert_eq!(d.failed_at("other", ip, t0).as_secs(), 1);
        // Quiet long enough: back to the start.
        assert_eq!(d.failed_at("mx", ip, t0 + FORGET_AFTER * 2).as_secs(), 1);
        d.failed_at("mx", ip, t0 + FORGET_AFTER * 2);
        d.succeeded("mx", ip);
        assert_eq!(d.failed_at("mx", ip, t0 + FORGET_AFTER * 2).as_secs(), 1);
    }

    #[test]
    fn an_ipv6_client_counts_by_its_64() {
        let d = FailureDelays::default();
        let t0 = Instant::now();
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        assert_eq!(d.failed_at("mx", ip("2001:db8:1:2::1"), t0).as_secs(), 1);
        assert_eq!(
            d.failed_at("mx", ip("2001:db8:1:2:ffff::9"), t0).as_secs(),
            2
        );
        assert_eq!(d.failed_at("mx", ip("2001:db8:1:3::1"), t0).as_secs(), 1);
        // IPv4-mapped is the IPv4 address.
        assert_eq!(d.failed_at("mx", ip("192.0.2.7"), t0).as_secs(), 1);
        assert_eq!(d.failed_at("mx", ip("::ffff:192.0.2.7"), t0).as_secs(), 2);
        d.succeeded("mx", ip("2001:db8:1:2::5"));
        assert_eq!(d.failed_at("mx", ip("2001:db8:1:2::1"), t0).as_secs(), 1);
    }

    #[test]
    fn bounded() {
        let d = FailureDelays::default();
        let t0 = Instant::now();
        for i in 0..(MAX_ENTRIES as u32 + 50) {
            let ip = Some(IpAddr::from(i.to_be_bytes()));
            d.failed_at("mx", ip, t0 + Duration::from_millis(u64::from(i)));
        }
        assert_eq!(d.len(), MAX_ENTRIES);
    }
}
