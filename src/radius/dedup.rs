//! Duplicate detection (RFC 5080 section 2.2.2). A retransmission, the same source address and
//! port, Identifier and Request Authenticator, within the window gets the reply that was sent
//! the first time, or nothing while the first is still being evaluated. It is never evaluated
//! again, so a retransmission can neither consume an OTP nor count as a failure.
//!
//! The cache keeps the *decision* (code and message), not the reply's octets: re-encoding it
//! for the retransmitted request, whose octets are the same, gives the same reply, and an entry
//! stays small (about 80 octets in its map, no allocation of its own), so the cache can remember
//! seconds of a login storm.
//!
//! Only requests that passed the authenticator checks enter the cache, so a forged packet
//! cannot poison it. The cache is bounded: past `capacity` the oldest entries go first.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What identifies a request: source address and port, Identifier, Request Authenticator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RequestKey {
    /// The source address as IPv6 (IPv4 mapped), octets only: compact and unambiguous.
    address: [u8; 16],
    port: u16,
    identifier: u8,
    authenticator: [u8; 16],
}

impl RequestKey {
    pub fn new(peer: SocketAddr, identifier: u8, authenticator: [u8; 16]) -> RequestKey {
        let address = match peer.ip() {
            IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            IpAddr::V6(v6) => v6.octets(),
        };
        RequestKey {
            address,
            port: peer.port(),
            identifier,
            authenticator,
        }
    }
}

/// What to do with a request, per the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen<R> {
    /// First time: evaluate it, then [`DedupCache::complete`] or [`DedupCache::forget`].
    New,
    /// A retransmission of a request still being evaluated: drop it.
    InProgress,
    /// A retransmission of an answered request: send this answer again.
    Answered(R),
}

struct Entry<R> {
    /// Milliseconds since the cache was made, when the request was first seen.
    at: u64,
    /// `None` while the request is being evaluated.
    answer: Option<R>,
}

/// Two generations instead of an ordered queue: new entries go into `young`; when it has
/// lived a whole window, or holds half the capacity, `old` is dropped and `young` becomes
/// `old`. An entry thus stays findable for at least one window (unless the cache is full,
/// when the oldest go first), expiry costs nothing per request, and the two maps keep their
/// allocations, so they are never rehashed after the first fill.
struct Inner<R> {
    young: HashMap<RequestKey, Entry<R>>,
    old: HashMap<RequestKey, Entry<R>>,
    /// When `young` became the young generation.
    young_since: u64,
}

pub struct DedupCache<R> {
    inner: Mutex<Inner<R>>,
    epoch: Instant,
    window_ms: u64,
    /// Entries per generation at most.
    generation_capacity: usize,
}

impl<R: Clone> DedupCache<R> {
    /// A cache of at most `capacity` entries (both generations, reserved at once: the pages
    /// become resident only as entries are written).
    pub fn new(window: Duration, capacity: usize) -> DedupCache<R> {
        let generation_capacity = (capacity / 2).max(1);
        DedupCache {
            inner: Mutex::new(Inner {
                young: HashMap::with_capacity(generation_capacity),
                old: HashMap::with_capacity(generation_capacity),
                young_since: 0,
            }),
            epoch: Instant::now(),
            window_ms: u64::try_from(window.as_millis()).unwrap_or(u64::MAX),
            generation_capacity,
        }
    }

    /// Looks `key` up at `now`, registering it as in progress when new.
    pub fn begin(&self, key: RequestKey, now: Instant) -> Seen<R> {
        let now = u64::try_from(now.saturating_duration_since(self.epoch).as_millis())
            .unwrap_or(u64::MAX);
        let mut inner = self.lock();
        let inner = &mut *inner;
        if now.saturating_sub(inner.young_since) >= self.window_ms
            || inner.young.len() >= self.generation_capacity
        {
            inner.old.clear();
            std::mem::swap(&mut inner.young, &mut inner.old);
            inner.young_since = now;
        }
        let found = inner.young.get(&key).or_else(|| inner.old.get(&key));
        if let Some(entry) = found.filter(|e| now.saturating_sub(e.at) < self.window_ms) {
            return match &entry.answer {
                None => Seen::InProgress,
                Some(answer) => Seen::Answered(answer.clone()),
            };
        }
        inner.old.remove(&key);
        inner.young.insert(
            key,
            Entry {
                at: now,
                answer: None,
            },
        );
        Seen::New
    }

    /// Records the answer sent for `key`.
    pub fn complete(&self, key: &RequestKey, answer: R) {
        let mut inner = self.lock();
        let inner = &mut *inner;
        if let Some(entry) = inner.young.get_mut(key).or_else(|| inner.old.get_mut(key)) {
            entry.answer = Some(answer);
        }
    }

    /// Removes `key` (the request got no reply, so a retransmission should be evaluated).
    pub fn forget(&self, key: &RequestKey) {
        let mut inner = self.lock();
        inner.young.remove(key);
        inner.old.remove(key);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<R>> {
        // A panic while holding this lock cannot leave the maps inconsistent in a way that
        // matters (worst case a stale entry), so recover from poisoning.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: u8) -> RequestKey {
        RequestKey::new("127.0.0.1:5000".parse().expect("addr"), id, [id; 16])
    }

    #[test]
    fn retransmission_gets_cached_reply() {
        let cache = DedupCache::<&str>::new(Duration::from_secs(30), 100);
        let t0 = Instant::now();
        assert_eq!(cache.begin(key(1), t0), Seen::New);
        assert_eq!(cache.begin(key(1), t0), Seen::InProgress);
        cache.complete(&key(1), "reply");
        assert_eq!(
            cache.begin(key(1), t0 + Duration::from_secs(29)),
            Seen::Answered("reply")
        );
    }

    #[test]
    fn entries_expire_after_window() {
        let cache = DedupCache::<&str>::new(Duration::from_secs(30), 100);
        let t0 = Instant::now();
        assert_eq!(cache.begin(key(1), t0), Seen::New);
        cache.complete(&key(1), "r");
        assert_eq!(cache.begin(key(1), t0 + Duration::from_secs(31)), Seen::New);
    }

    #[test]
    fn different_authenticator_is_a_new_request() {
        let cache = DedupCache::<&str>::new(Duration::from_secs(30), 100);
        let t0 = Instant::now();
        let other = RequestKey::new("127.0.0.1:5000".parse().expect("addr"), 1, [9; 16]);
        assert_eq!(cache.begin(key(1), t0), Seen::New);
        assert_eq!(cache.begin(other, t0), Seen::New);
    }

    #[test]
    fn bounded_capacity_evicts_oldest() {
        let cache = DedupCache::<&str>::new(Duration::from_secs(30), 4);
        let t0 = Instant::now();
        for id in 0..5 {
            assert_eq!(cache.begin(key(id), t0), Seen::New);
        }
        let held = {
            let inner = cache.lock();
            inner.young.len() + inner.old.len()
        };
        assert!(held <= 4, "{held} entries");
        assert_eq!(cache.begin(key(4), t0), Seen::InProgress);
        assert_eq!(cache.begin(key(3), t0), Seen::InProgress);
        assert_eq!(cache.begin(key(0), t0), Seen::New, "the oldest went first");
    }

    #[test]
    fn an_entry_outlives_a_generation_change_for_its_whole_window() {
        let cache = DedupCache::<&str>::new(Duration::from_secs(30), 100);
        let t0 = cache.epoch;
        assert_eq!(cache.begin(key(1), t0 + Duration::from_secs(20)), Seen::New);
        cache.complete(&key(1), "first answer");
        // The young generation is a window old: it becomes the old one.
        assert_eq!(cache.begin(key(2), t0 + Duration::from_secs(31)), Seen::New);
        assert_eq!(
            cache.begin(key(1), t0 + Duration::from_secs(45)),
            Seen::Answered("first answer")
        );
        // Past its own window, the same key is a new request.
        assert_eq!(cache.begin(key(1), t0 + Duration::from_secs(51)), Seen::New);
    }

    #[test]
    fn same_request_from_another_port_or_family_is_new() {
        let cache = DedupCache::<&str>::new(Duration::from_secs(30), 10);
        let t0 = Instant::now();
        let from = |peer: &str| RequestKey::new(peer.parse().expect("addr"), 1, [1; 16]);
        assert_eq!(cache.begin(from("127.0.0.1:5000"), t0), Seen::New);
        assert_eq!(cache.begin(from("127.0.0.1:5001"), t0), Seen::New);
        assert_eq!(cache.begin(from("[::1]:5000"), t0), Seen::New);
        assert_eq!(
            cache.begin(from("[::ffff:127.0.0.1]:5000"), t0),
            Seen::InProgress
        );
    }

    #[test]
    fn forget_allows_reevaluation() {
        let cache = DedupCache::<&str>::new(Duration::from_secs(30), 10);
        let t0 = Instant::now();
        assert_eq!(cache.begin(key(1), t0), Seen::New);
        cache.forget(&key(1));
        assert_eq!(cache.begin(key(1), t0), Seen::New);
    }
}
