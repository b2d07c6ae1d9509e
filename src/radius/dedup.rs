//! Duplicate detection (RFC 5080 section 2.2.2). A retransmission, the same source address and
//! port, Identifier and Request Authenticator, within the window gets the reply that was sent
//! the first time, or nothing while the first is still being evaluated. It is never evaluated
//! again, so a retransmission can neither consume an OTP nor count as a failure.
//!
//! The cache keeps the *decision* (code and message), not the reply's octets: re-encoding it
//! for the retransmitted request, whose octets are the same, gives the same reply, and an entry
//! stays small (about 130 octets, no allocation of its own), so the cache can remember many
//! seconds of a login storm.
//!
//! Only requests that passed the authenticator checks enter the cache, so a forged packet
//! cannot poison it. The cache is bounded: past `capacity` the oldest entry goes first.

use std::collections::{HashMap, VecDeque};
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

struct Inner<R> {
    entries: HashMap<RequestKey, Entry<R>>,
    /// Insertion order, for expiry and eviction.
    order: VecDeque<(u64, RequestKey)>,
}

pub struct DedupCache<R> {
    inner: Mutex<Inner<R>>,
    epoch: Instant,
    window_ms: u64,
    capacity: usize,
}

impl<R: Clone> DedupCache<R> {
    pub fn new(window: Duration, capacity: usize) -> DedupCache<R> {
        let epoch = Instant::now();
        DedupCache {
            inner: Mutex::new(Inner {
                entries: HashMap::new(),
                order: VecDeque::new(),
            }),
            epoch,
            window_ms: u64::try_from(window.as_millis()).unwrap_or(u64::MAX),
            capacity: capacity.max(1),
        }
    }

    /// Looks `key` up at `now`, registering it as in progress when new.
    pub fn begin(&self, key: RequestKey, now: Instant) -> Seen<R> {
        let now = u64::try_from(now.saturating_duration_since(self.epoch).as_millis())
            .unwrap_or(u64::MAX);
        let mut inner = self.lock();
        inner.expire(now, self.window_ms);
        if let Some(entry) = inner.entries.get(&key) {
            return match &entry.answer {
                None => Seen::InProgress,
                Some(answer) => Seen::Answered(answer.clone()),
            };
        }
        while inner.entries.len() >= self.capacity {
            let Some((at, oldest)) = inner.order.pop_front() else {
                break;
            };
            inner.remove_if_from(&oldest, at);
        }
        inner.entries.insert(
            key,
            Entry {
                at: now,
                answer: None,
            },
        );
        inner.order.push_back((now, key));
        Seen::New
    }

    /// Records the answer sent for `key`.
    pub fn complete(&self, key: &RequestKey, answer: R) {
        if let Some(entry) = self.lock().entries.get_mut(key) {
            entry.answer = Some(answer);
        }
    }

    /// Removes `key` (the request got no reply, so a retransmission should be evaluated).
    pub fn forget(&self, key: &RequestKey) {
        self.lock().entries.remove(key);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<R>> {
        // A panic while holding this lock cannot leave the maps inconsistent in a way that
        // matters (worst case a stale entry), so recover from poisoning.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<R> Inner<R> {
    fn expire(&mut self, now: u64, window_ms: u64) {
        while let Some(&(at, key)) = self.order.front() {
            if now.saturating_sub(at) < window_ms {
                break;
            }
            self.order.pop_front();
            self.remove_if_from(&key, at);
        }
    }

    /// Removes `key` if its entry is the one an order slot taken at `at` refers to, not a
    /// newer reinsertion (which has a slot of its own).
    fn remove_if_from(&mut self, key: &RequestKey, at: u64) {
        if self.entries.get(key).is_some_and(|e| e.at == at) {
            self.entries.remove(key);
        }
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
        let cache = DedupCache::<&str>::new(Duration::from_secs(30), 2);
        let t0 = Instant::now();
        for id in 0..5 {
            assert_eq!(cache.begin(key(id), t0), Seen::New);
        }
        assert_eq!(cache.lock().entries.len(), 2);
        assert_eq!(cache.begin(key(4), t0), Seen::InProgress);
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
